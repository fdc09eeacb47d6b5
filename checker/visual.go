package checker

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/anishathalye/porcupine"

	"lockstep/model"
)

// VisualizeKey writes porcupine's visualisation of one store's reads of
// one key: a self-contained HTML page (its CSS, script and data inline)
// that shows the reads on a time line and, when they are not
// linearizable, porcupine's longest partial linearizations and the read
// none of them could take. The reads are the ones the linearizability
// check judges (found reads, with the same model), so the page shows what
// made a Nonlinearizable anomaly. It returns porcupine's result; timeout
// bounds the search as Options.LinearizabilityTimeout does (0: no limit).
func VisualizeKey(w io.Writer, h *model.History, store string, key model.Key, timeout time.Duration) (porcupine.CheckResult, error) {
	spec, ok := h.Store(store)
	if !ok {
		return porcupine.Unknown, fmt.Errorf("visualize %s %s: no store %q in the history", store, key, store)
	}
	t := newTruth(h)
	in := &readInput{key}
	var ops []porcupine.Operation
	for i := range h.Reads {
		r := &h.Reads[i]
		if r.Store != store || r.Key != key || !r.Found || r.Return < r.Call {
			continue
		}
		ops = append(ops, porcupine.Operation{
			ClientId: r.Client,
			Input:    in,
			Call:     int64(r.Call),
			Output:   &readOutput{doc: r.Doc, committed: t.isVersion(spec.Kind, r.Key, r.Doc)},
			Return:   int64(r.Return),
		})
	}
	if len(ops) == 0 {
		return porcupine.Unknown, fmt.Errorf("visualize %s %s: the store has no found read of the key", store, key)
	}
	slices.SortStableFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	single := readModel
	single.Partition = nil
	res, info := porcupine.CheckOperationsVerbose(single, ops, timeout)
	if err := porcupine.Visualize(single, info, w); err != nil {
		return res, fmt.Errorf("visualize %s %s: %w", store, key, err)
	}
	return res, nil
}
