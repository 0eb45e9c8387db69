package hook

import (
	"errors"
	"testing"
)

func TestUndoRunsInReverseAndCarriesOn(t *testing.T) {
	var got []int
	var u undoStack
	for i := 1; i <= 3; i++ {
		u.push(func() error {
			got = append(got, i)
			if i == 2 {
				return errors.New("two")
			}
			return nil
		})
	}
	if err := u.run(); err == nil || err.Error() != "two" {
		t.Errorf("run = %v, want the failure", err)
	}
	if len(got) != 3 || got[0] != 3 || got[2] != 1 {
		t.Errorf("ran %v, want [3 2 1]", got)
	}
}
