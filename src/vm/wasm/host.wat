;; A JS function as a Lua C function (lua_CFunction: int f(lua_State *L)),
;; which Lua's function table can hold and C can call: Node 20 has no
;; WebAssembly.Function, so the JS function is imported by this module and
;; exported again, as a WebAssembly function of that type. Compiled once per
;; thread, instantiated once per host function (src/vm/bridge.ts hostFunction;
;; Emscripten's addFunction builds the same module at run time).
(module
  (import "env" "f" (func $f (param i32) (result i32)))
  (export "f" (func $f)))
