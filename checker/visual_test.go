package checker

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"

	"lockstep/model"
)

func fixtureHistory(t *testing.T, name string) *model.History {
	t.Helper()
	text, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	in, _, _ := strings.Cut(string(text), "\n----\n")
	h, err := parseHistory(in)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// The key the checker calls non-linearizable is Illegal in its
// visualisation too, and the page carries porcupine's script and the
// reads' descriptions; a linearizable key of the same store is Ok.
func TestVisualizeKey(t *testing.T) {
	h := fixtureHistory(t, "nonlinearizable-bad.txt")
	for _, c := range []struct {
		key  string
		want porcupine.CheckResult
	}{{"2", porcupine.Illegal}, {"1", porcupine.Ok}} {
		var b bytes.Buffer
		res, err := VisualizeKey(&b, h, "cache", model.Key{Table: "k", PK: c.key}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if res != c.want {
			t.Errorf("k/%s: %s, want %s", c.key, res, c.want)
		}
		page := b.String()
		for _, want := range []string{"<html", "<script", `read(k/` + c.key + `) -\u003e lsn=0/20`} {
			if !strings.Contains(page, want) {
				t.Errorf("k/%s: the page lacks %q", c.key, want)
			}
		}
	}
	if _, err := VisualizeKey(&bytes.Buffer{}, h, "cache", model.Key{Table: "k", PK: "9"}, 0); err == nil {
		t.Error("a key never read: want an error, got none")
	}
	if _, err := VisualizeKey(&bytes.Buffer{}, h, "replica", model.Key{Table: "k", PK: "2"}, 0); err == nil {
		t.Error("an undeclared store: want an error, got none")
	}
}
