package scenarios

import (
	"context"
	"io"
	"log/slog"
	"time"

	"lockstep/sim"
)

// virtualTime stamps log records with the world's virtual time instead of
// the wall clock, so a run's log reads on the same timeline as its trace.
type virtualTime struct {
	slog.Handler
	w *sim.World
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (h virtualTime) Handle(ctx context.Context, r slog.Record) error {
	r.Time = epoch.Add(h.w.Now())
	return h.Handler.Handle(ctx, r)
}

func (h virtualTime) WithAttrs(as []slog.Attr) slog.Handler {
	return virtualTime{h.Handler.WithAttrs(as), h.w}
}

func (h virtualTime) WithGroup(name string) slog.Handler {
	return virtualTime{h.Handler.WithGroup(name), h.w}
}

// newLogger logs pipeline debug output to out on virtual time, or nowhere.
func newLogger(out io.Writer, w *sim.World) *slog.Logger {
	if out == nil {
		return slog.New(slog.DiscardHandler)
	}
	h := slog.NewTextHandler(out, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.String("vt", a.Value.Time().Sub(epoch).String())
			}
			return a
		},
	})
	return slog.New(virtualTime{h, w})
}
