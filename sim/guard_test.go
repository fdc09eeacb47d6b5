package sim

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// simulatedPackages are the directories (relative to the module root) whose
// code runs inside the simulator, and so may take time, concurrency and
// randomness only from the world. Real-world adapters live in their own
// sub-packages and are not listed.
var simulatedPackages = []string{"model", "faults", "pipeline", "pipeline/logcodec", "pipeline/store", "sim", "sim/services", "scenarios/workload", "pipeline/twopc"}

// forbidden lists, per import path, the package-level functions that reach
// outside the simulation. math/rand's and math/rand/v2's constructors (New,
// NewPCG, ...) are allowed: they build seeded generators.
var forbidden = map[string]map[string]bool{
	"time": {"Now": true, "Sleep": true, "After": true, "AfterFunc": true, "NewTimer": true,
		"NewTicker": true, "Tick": true, "Since": true, "Until": true},
	"math/rand":    nil, // nil: every function except constructors
	"math/rand/v2": nil,
}

var randConstructors = map[string]bool{"New": true, "NewPCG": true, "NewChaCha8": true, "NewSource": true, "NewZipf": true}

func TestSimulatedCodeUsesOnlyTheWorld(t *testing.T) {
	root := filepath.Join("..")
	var violations []string
	for _, dir := range simulatedPackages {
		files, _ := filepath.Glob(filepath.Join(root, dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			violations = append(violations, guardFile(t, f)...)
		}
	}
	for _, v := range violations {
		t.Error(v)
	}
}

func guardFile(t *testing.T, path string) []string {
	fset := token.NewFileSet()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(fset, path, src, 0)
	if err != nil {
		t.Fatal(err)
	}
	return guardAST(fset, f)
}

func guardAST(fset *token.FileSet, f *ast.File) []string {
	local := map[string]string{} // local import name -> path
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		name := filepath.Base(p)
		if p == "math/rand/v2" {
			name = "rand"
		}
		if imp.Name != nil {
			name = imp.Name.Name
		}
		local[name] = p
	}
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			out = append(out, fset.Position(n.Pos()).String()+": bare go statement in simulated code; use Env.Go or Node.Go")
		case *ast.SelectorExpr:
			id, ok := n.X.(*ast.Ident)
			if !ok {
				return true
			}
			path, ok := local[id.Name]
			if !ok {
				return true
			}
			fns, guarded := forbidden[path]
			if !guarded {
				return true
			}
			bad := fns[n.Sel.Name]
			if fns == nil {
				bad = ast.IsExported(n.Sel.Name) && !randConstructors[n.Sel.Name] && isFuncName(n.Sel.Name)
			}
			if bad {
				out = append(out, fset.Position(n.Pos()).String()+": "+path+"."+n.Sel.Name+" in simulated code; use the world's Env (Now, Sleep, Rand)")
			}
		}
		return true
	})
	return out
}

// isFuncName tells functions from types in math/rand: types (Rand, Source,
// PCG, Zipf) are fine to name.
func isFuncName(name string) bool {
	switch name {
	case "Rand", "Source", "PCG", "ChaCha8", "Zipf":
		return false
	}
	return true
}

func TestGuardCatchesViolations(t *testing.T) {
	src := `package p
import (
	"time"
	mr "math/rand"
	"math/rand/v2"
)
func f() {
	_ = time.Now()
	time.Sleep(1)
	go f()
	_ = mr.Intn(3)
	_ = rand.IntN(3)
	r := rand.New(rand.NewPCG(1, 2)) // allowed
	_ = r
	var d time.Duration // allowed
	_ = d
}`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := guardAST(fset, f)
	want := []string{"time.Now", "time.Sleep", "bare go", "math/rand.Intn", "math/rand/v2.IntN"}
	if len(got) != len(want) {
		t.Fatalf("guard found %d violations, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) {
			t.Errorf("violation %d = %q, want it to mention %q", i, got[i], w)
		}
	}
}
