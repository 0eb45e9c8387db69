// Package man writes bridgehook's man pages from its command line's own
// definitions. It lives apart from package cli so that the binary, which
// every container start runs, carries none of the man page writer.
package man

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Write writes bridgehook(8), and a page per command, bridgehook-ls(8)
// and so on, into dir.
func Write(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	header := &doc.GenManHeader{Title: "BRIDGEHOOK", Section: "8", Source: "bridgehook", Manual: "System Administration"}
	if err := doc.GenManTree(root, header, dir); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	return nil
}
