package checker

import (
	"fmt"
	"sync"

	"github.com/anishathalye/porcupine"

	"lockstep/model"
)

// readInput is a read operation's input: the key it read.
type readInput struct{ key model.Key }

// readOutput is what a read returned. committed is decided before porcupine
// runs (the truth index is not safe for porcupine's parallel partitions).
type readOutput struct {
	doc       model.Doc
	committed bool
}

// readModel is the sequential specification of one key in one store, as
// its reads see it: the state is the highest version (LSN) seen so far; a
// read is legal iff it returns a committed version of the key that is not
// older than the state, and then moves the state to its version.
var readModel = porcupine.Model{
	Partition: partitionByKey,
	Init:      func() any { return model.LSN(0) },
	Step: func(state, input, output any) (bool, any) {
		st, out := state.(model.LSN), output.(*readOutput)
		if !out.committed || out.doc.LSN < st {
			return false, st
		}
		return true, out.doc.LSN
	},
	Hash: func(state any) uint64 { return uint64(state.(model.LSN)) },
	DescribeOperation: func(input, output any) string {
		out := output.(*readOutput)
		return fmt.Sprintf("read(%s) -> lsn=%s %q", input.(*readInput).key, out.doc.LSN, Abbrev(out.doc.Value))
	},
	DescribeState: func(state any) string { return "lsn>=" + state.(model.LSN).String() },
}

// partitionByKey splits a store's reads into one history per key; ops
// arrive grouped by key already (see readGroups), so it only cuts.
func partitionByKey(ops []porcupine.Operation) [][]porcupine.Operation {
	var parts [][]porcupine.Operation
	start := 0
	for i := 1; i <= len(ops); i++ {
		if i == len(ops) || ops[i].Input.(*readInput).key != ops[start].Input.(*readInput).key {
			parts = append(parts, ops[start:i])
			start = i
		}
	}
	return parts
}

// checkLinearizability runs porcupine over each declared store's found
// reads, one partition per key. A key read only once is decided by the
// model's Step from Init directly, which is all porcupine would do with
// it, without a goroutine of its own. When a store is Illegal each key is
// checked alone to name the keys at fault.
func (c *run) checkLinearizability() {
	groups := c.readGroups()
	type storeOps struct {
		keyed      []readGroup
		parts      [][]porcupine.Operation // per key
		ops        []porcupine.Operation   // keys read more than once
		reads      int
		trivialBad bool // a key read once, illegally
		res        porcupine.CheckResult
	}
	all := make([]storeOps, len(c.names))
	// Build the operations first, sequentially: the truth index fills
	// its projections lazily and is not safe for concurrent use.
	for si, name := range c.names {
		so := &all[si]
		spec := c.stores[name]
		for _, g := range groups {
			if g.store == name {
				so.keyed = append(so.keyed, g)
				so.reads += len(g.reads)
			}
		}
		// Inputs and outputs are pointers into slices: boxing them as
		// values would allocate once per read.
		ins := make([]readInput, len(so.keyed))
		outs := make([]readOutput, 0, so.reads)
		so.parts = make([][]porcupine.Operation, len(so.keyed))
		for gi, g := range so.keyed {
			ins[gi] = readInput{g.key}
			start := len(so.ops)
			for _, i := range g.reads {
				r := &c.h.Reads[i]
				outs = append(outs, readOutput{doc: r.Doc, committed: c.t.isVersion(spec.Kind, r.Key, r.Doc)})
				op := porcupine.Operation{
					ClientId: r.Client,
					Input:    &ins[gi],
					Call:     int64(r.Call),
					Output:   &outs[len(outs)-1],
					Return:   int64(r.Return),
				}
				if len(g.reads) == 1 {
					if ok, _ := readModel.Step(readModel.Init(), op.Input, op.Output); !ok {
						so.trivialBad = true
					}
					so.parts[gi] = []porcupine.Operation{op}
					continue
				}
				so.ops = append(so.ops, op)
			}
			if len(g.reads) > 1 {
				so.parts[gi] = so.ops[start:len(so.ops):len(so.ops)]
			}
		}
	}
	// Then run porcupine for every store at once; each result lands in
	// its own slot, so the outcome does not depend on scheduling.
	var wg sync.WaitGroup
	for si := range all {
		so := &all[si]
		so.res = porcupine.Ok
		if len(so.ops) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			so.res = checkOperations(readModel, so.ops, c.opts.LinearizabilityTimeout)
		}()
	}
	wg.Wait()
	for si, name := range c.names {
		so := &all[si]
		if so.trivialBad {
			so.res = porcupine.Illegal
		}
		c.lin = append(c.lin, Linearizability{
			Store:   name,
			Result:  so.res,
			Reads:   so.reads,
			Keys:    len(so.keyed),
			Claimed: c.stores[name].Claims[model.PerKeyOrder],
		})
		switch so.res {
		case porcupine.Unknown:
			c.unknown = append(c.unknown, name)
		case porcupine.Illegal:
			c.nonlinearizable(name, so.keyed, so.parts)
		}
	}
}

// nonlinearizable reports a store whose reads are Illegal, naming the
// first key whose reads alone are Illegal.
func (c *run) nonlinearizable(store string, keyed []readGroup, parts [][]porcupine.Operation) {
	single := readModel
	single.Partition = nil
	var bad []readGroup
	var unknown int
	for gi, g := range keyed {
		switch checkOperations(single, parts[gi], c.opts.LinearizabilityTimeout) {
		case porcupine.Illegal:
			bad = append(bad, g)
		case porcupine.Unknown:
			unknown++
		}
	}
	w := Witness{Source: FromReads}
	var key model.Key
	if len(bad) == 0 {
		// Only when every illegal key's own check timed out.
		w.Detail = fmt.Sprintf("porcupine found no linearization of the store's reads over %d keys (%d keys' own checks timed out)",
			len(keyed), unknown)
		for _, g := range keyed {
			w.At = max(w.At, c.h.Reads[g.reads[len(g.reads)-1]].Return)
		}
	} else {
		g := bad[0]
		key = g.key
		w.At = c.h.Reads[g.reads[len(g.reads)-1]].Return
		w.Detail = fmt.Sprintf("porcupine found no linearization of the key's %d reads (%d of %d keys illegal)",
			len(g.reads), len(bad), len(keyed))
	}
	c.add(Nonlinearizable, store, key, w)
}
