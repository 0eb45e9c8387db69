package hook

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// undoStack holds the undo of each step done so far.
type undoStack []func() error

// push adds a step's undo; nil, for a step that changed nothing, is
// skipped.
func (u *undoStack) push(f func() error) {
	if f != nil {
		*u = append(*u, f)
	}
}

// run undoes in reverse order, carrying on past failures so that as much as
// possible is undone, and returns every failure.
func (u *undoStack) run() error {
	var errs []error
	for i := len(*u) - 1; i >= 0; i-- {
		if err := (*u)[i](); err != nil {
			errs = append(errs, err)
		}
	}
	*u = nil
	return errors.Join(errs...)
}

// onError undoes everything when err is set, and returns err with any
// failure to undo added to it.
func (u *undoStack) onError(err error) error {
	if err == nil {
		return nil
	}
	if uerr := u.run(); uerr != nil {
		return fmt.Errorf("%w (and undoing it: %v)", err, strings.ReplaceAll(uerr.Error(), "\n", "; "))
	}
	return err
}

// failpoint stops the hook at the point called name when the environment
// asks for it, so that tests can hit a moment exactly:
// BRIDGEHOOK_FAILPOINT=name parks the hook there (it says so on stderr
// and waits to be killed, as by a runtime's timeout or the OOM killer);
// BRIDGEHOOK_FAILPOINT=name:DURATION pauses it there, widening a race.
func failpoint(name string) {
	fp := os.Getenv("BRIDGEHOOK_FAILPOINT")
	if fp == "" {
		return
	}
	at, pause, _ := strings.Cut(fp, ":")
	if at != name {
		return
	}
	if d, err := time.ParseDuration(pause); err == nil {
		time.Sleep(d)
		return
	}
	fmt.Fprintf(os.Stderr, "bridgehook: failpoint %s\n", name)
	for {
		time.Sleep(time.Hour)
	}
}
