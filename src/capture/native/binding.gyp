{
  "targets": [
    {
      "target_name": "riff_pcap",
      "sources": ["riff_pcap.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lpcap"],
      "xcode_settings": {
        "OTHER_CFLAGS": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
      }
    }
  ]
}
