// Command bridgehook is an OCI runtime hook that puts a container on a
// NAT'd Linux bridge (createRuntime or prestart) and takes it off again
// (poststop), plus the commands to look after the networks it makes; run
// by a CNI runtime, it is a CNI plugin.
package main

import (
	"bytes"
	"io"
	"os"

	"github.com/bridgehook/bridgehook/cli"
	"github.com/bridgehook/bridgehook/cni"
	"github.com/bridgehook/bridgehook/oci"
)

func main() {
	// The CNI face, when a CNI runtime runs the binary: CNI_COMMAND set
	// and anything but an OCI state on stdin (see cni.Wants).
	if command := os.Getenv("CNI_COMMAND"); command != "" {
		stdin, err := io.ReadAll(io.LimitReader(os.Stdin, oci.MaxState+1))
		if err == nil && cni.Wants(command, stdin) {
			os.Exit(cni.Main(stdin, cli.Version()+" (CNI plugin)"))
		}
		os.Exit(cli.Run(os.Args[1:], bytes.NewReader(stdin), os.Stdout, os.Stderr))
	}
	os.Exit(cli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
