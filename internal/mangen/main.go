// Command mangen writes bridgehook's man pages into the directory it is
// given: `make man` runs it.
package main

import (
	"fmt"
	"os"

	"github.com/bridgehook/bridgehook/cli"
	"github.com/bridgehook/bridgehook/cli/man"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mangen DIR")
		os.Exit(2)
	}
	if err := man.Write(cli.Root(), os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "mangen:", err)
		os.Exit(1)
	}
}
