// plugin.app_id against nDPI (ndpiReader), flow by flow, over the corpus the
// repository carries: the figure README's "How accurate plugin.app_id is"
// gives, held so a signature change that loses flows (or names them wrong)
// fails here. scripts/setup installs Debian's libndpi-bin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { FIXTURES, ROOT } from './helpers.js';

const ndpi = spawnSync('sh', ['-c', 'command -v ndpiReader'], { encoding: 'utf8' }).stdout.trim();

test('app_id names the flows nDPI names in fixtures/corpus: recall >= 95%, precision >= 99%', { skip: ndpi ? false : 'ndpiReader is not installed (apt-get install libndpi-bin; scripts/setup does)' }, () => {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/scripts/dpi-compare.js'), path.join(FIXTURES, 'corpus')], { encoding: 'utf8', timeout: 600_000 });
  assert.equal(r.status, 0, r.stderr);
  const flows = Number(/flows nDPI names: (\d+)/.exec(r.stdout)?.[1]);
  const [recall, precision] = (/recall ([\d.]+)%\s+precision ([\d.]+)%/.exec(r.stdout) ?? []).slice(1).map(Number);
  assert.match(r.stdout, /0 riff runs failed/, r.stdout);
  assert.ok(flows >= 40, `nDPI names ${flows} flows (the corpus or ndpiReader changed)`);
  assert.ok(recall >= 95, `recall ${recall}%\n${r.stdout}`);
  assert.ok(precision >= 99, `precision ${precision}%\n${r.stdout}`);
});
