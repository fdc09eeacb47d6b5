package shrink

import (
	"fmt"
	"time"

	"lockstep/checker"
	"lockstep/faults"
)

// PlanRunner runs a world under a plan (nil: the seed's own) and returns the
// plan it ran and the checker's report.
type PlanRunner func(plan *faults.Plan) (faults.Plan, *checker.Report, error)

// PlanResult is a plan-only shrink.
type PlanResult struct {
	Original faults.Plan
	Plan     faults.Plan // the smallest plan that failed as wanted
	Class    checker.Class
	Store    string
	Report   *checker.Report // of the run under Plan
	Runs     int
	Elapsed  time.Duration
	Stopped  string
	_        struct{}
}

// DefaultPlanRuns is ShrinkPlan's default budget: in containers about ten
// minutes.
const DefaultPlanRuns = 8

// ShrinkPlan shrinks a fault plan alone, by ddmin over its lines: no pass
// one line at a time, no windows, no workload. It is for a world whose runs
// take a minute and do not replay bit for bit (containers): the original
// runs first, to see it fail in this attempt, and a candidate that passed
// once might fail on another try, so the result is a smaller plan that
// failed once as wanted, not a minimal one nor a deterministic repro. A run
// that cannot complete ends the shrink with its error (in containers that
// is the environment, and the next run would fail the same way).
func ShrinkPlan(run PlanRunner, cfg Config) (*PlanResult, error) {
	if cfg.MaxRuns <= 0 {
		cfg.MaxRuns = DefaultPlanRuns
	}
	start := time.Now()
	say := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, format+"\n", args...)
		}
	}
	plan, rep, err := run(nil)
	if err != nil {
		return nil, err
	}
	res := &PlanResult{Original: plan, Plan: plan, Report: rep, Runs: 1}
	for _, a := range rep.Violations() {
		if (cfg.Class == "" || a.Class == cfg.Class) && (cfg.Store == "" || a.Store == cfg.Store) {
			res.Class, res.Store = a.Class, a.Store
			break
		}
	}
	if res.Class == "" {
		return nil, ErrNoViolation
	}
	say("shrink (plan only, each candidate run once): keep %s on %s; start at %d faults", res.Class, res.Store, len(plan.Faults))
	var runErr error
	ddmin(plan.Faults, false, func(fs []faults.Fault) bool {
		switch {
		case runErr != nil || res.Stopped != "":
			return false
		case res.Runs >= cfg.MaxRuns:
			res.Stopped = fmt.Sprintf("the budget of %d runs", cfg.MaxRuns)
			return false
		case cfg.Timeout > 0 && time.Since(start) > cfg.Timeout:
			res.Stopped = fmt.Sprintf("the time budget of %v", cfg.Timeout)
			return false
		}
		res.Runs++
		cand := faults.Plan{Faults: fs, Quiet: plan.Quiet}
		_, rep, err := run(&cand)
		if err != nil {
			runErr = err
			return false
		}
		for _, a := range rep.Violations() {
			if a.Class == res.Class && a.Store == res.Store {
				res.Plan, res.Report = cand, rep
				return true
			}
		}
		say("  %d faults: held this time", len(fs))
		return false
	}, say)
	res.Elapsed = time.Since(start)
	if runErr != nil {
		return nil, runErr
	}
	say("shrunk to %d faults in %d runs, %v", len(res.Plan.Faults), res.Runs, res.Elapsed.Round(time.Second))
	return res, nil
}
