// quicgo: a QUIC client or echo server of quic-go (Debian 12's 0.29), for
// riff's captures of QUIC versions ngtcp2 0.12 does not speak (draft-29).
//   quicgo server ADDR:PORT CERT KEY [VERSION[,VERSION...]]
//   quicgo client ADDR:PORT SNI VERSION[,VERSION...]   (hex: 0xff00001d,0x1)
// The client offers ALPN riff-echo (this server: one echoed line) and h3
// (an HTTP/3 server: the handshake only).
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	quic "github.com/lucas-clemente/quic-go"
)

func versions(s string) []quic.VersionNumber {
	var out []quic.VersionNumber
	for _, v := range strings.Split(s, ",") {
		n, err := strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 32)
		if err != nil {
			fail(err)
		}
		out = append(out, quic.VersionNumber(n))
	}
	return out
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "quicgo:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 5 {
		fail(fmt.Errorf("usage: quicgo server ADDR CERT KEY | quicgo client ADDR SNI VERSIONS"))
	}
	switch os.Args[1] {
	case "server":
		cert, err := tls.LoadX509KeyPair(os.Args[3], os.Args[4])
		if err != nil {
			fail(err)
		}
		var conf *quic.Config
		if len(os.Args) > 5 {
			conf = &quic.Config{Versions: versions(os.Args[5])}
		}
		ln, err := quic.ListenAddr(os.Args[2], &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"riff-echo"}}, conf)
		if err != nil {
			fail(err)
		}
		for {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				fail(err)
			}
			go func() {
				st, err := conn.AcceptStream(context.Background())
				if err != nil {
					return
				}
				io.Copy(st, st)
				st.Close()
			}()
		}
	case "client":
		conf := &quic.Config{Versions: versions(os.Args[4]), HandshakeIdleTimeout: 5 * time.Second}
		conn, err := quic.DialAddr(os.Args[2], &tls.Config{ServerName: os.Args[3], InsecureSkipVerify: true, NextProtos: []string{"riff-echo", "h3"}}, conf)
		if err != nil {
			fail(err)
		}
		if conn.ConnectionState().TLS.NegotiatedProtocol == "h3" {
			// an HTTP/3 server (ngtcp2's): the handshake is what is wanted
			conn.CloseWithError(0x100, "")
			return
		}
		st, err := conn.OpenStreamSync(context.Background())
		if err != nil {
			fail(err)
		}
		st.Write([]byte("hello over QUIC\n"))
		st.Close()
		b, _ := io.ReadAll(st)
		fmt.Printf("%s", b)
		conn.CloseWithError(0, "")
	}
}
