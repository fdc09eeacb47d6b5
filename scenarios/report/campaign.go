package report

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"lockstep/checker"
	"lockstep/model"
	"lockstep/scenarios"
)

// CampaignOptions tunes WriteCampaign.
type CampaignOptions struct {
	// PerCell is how many failing runs of each scenario and system get a
	// report (default 5); the others are listed by their repro line.
	PerCell int
	// Shrink, when set, shrinks a failing run; its result gets a report of
	// its own, linked beside the run's. Nil: runs are not shrunk.
	Shrink func(scenarios.Repro) (*scenarios.Outcome, error)
	_      struct{}
}

// indexRun is one listed run of the index page.
type indexRun struct {
	Token  string
	Kind   string // "violating", "inconclusive", "refused"
	Report string // relative link, "" when not rendered
	Shrunk string // relative link to the shrunk run's report, "" when none
	Note   string // why the run has no report, or what replaying it showed
}

type indexCell struct {
	Scenario string
	Cells    []*scenarios.Cell // per system, in the campaign's order; nil where not run
}

type classRow struct {
	Class    checker.Class
	Property model.Property
	Counts   []int // per system
	Unclaim  []int
}

type indexView struct {
	Systems   []scenarios.System
	Rows      []indexCell
	Classes   []classRow
	Notes     []string // on unclaimed anomalies
	Rates     []string // seeds/s per system
	Summary   *scenarios.Summary
	Wall      string
	Runs      []indexRun
	Violating int // pipeline runs that violated a claim
	// Unjudged counts pipeline runs that were not judged a pass or a
	// failure (inconclusive, refused) and runs that could not complete.
	Unjudged int
}

// WriteCampaign writes a campaign's index page to dir/index.html and, in
// dir/runs, the report of each failing, inconclusive or refused run (up to
// opts.PerCell per scenario and system, the lowest seeds first). Reports
// are made by replaying each run's token, which gives the same run: a
// replay that does not fail as the campaign said is listed as such, never
// drawn as the failure.
func WriteCampaign(dir string, cfg scenarios.CampaignConfig, sum *scenarios.Summary, opts CampaignOptions) error {
	if opts.PerCell <= 0 {
		opts.PerCell = 5
	}
	runs := filepath.Join(dir, "runs")
	if err := os.MkdirAll(runs, 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	v := &indexView{Systems: cfg.Systems, Summary: sum, Wall: fmtDur(sum.Wall)}
	byName := map[string]*scenarios.Scenario{}
	for _, sc := range cfg.Scenarios {
		byName[sc.Name] = sc
		row := indexCell{Scenario: sc.Name}
		for _, sys := range cfg.Systems {
			row.Cells = append(row.Cells, sum.Cell(sc.Name, sys))
		}
		v.Rows = append(v.Rows, row)
	}
	for _, c := range checker.Classes {
		row := classRow{Class: c, Property: c.Property()}
		any := false
		for _, sys := range cfg.Systems {
			n, u := 0, 0
			for _, cell := range sum.Cells {
				if cell.System == sys {
					n += cell.Anomalies[c]
					u += cell.Unclaimed[c]
				}
			}
			row.Counts, row.Unclaim = append(row.Counts, n), append(row.Unclaim, u)
			any = any || n > 0
		}
		if any {
			v.Classes = append(v.Classes, row)
		}
	}
	v.Notes = unclaimedNotes(cfg, sum, byName)
	v.Unjudged += len(sum.Errors)
	for _, sys := range cfg.Systems {
		n, secs := 0, 0.0
		for _, c := range sum.Cells {
			if c.System == sys && c.SeedsPerSecond > 0 {
				n += c.Seeds
				secs += float64(c.Seeds) / c.SeedsPerSecond
			}
		}
		if secs > 0 {
			v.Rates = append(v.Rates, fmt.Sprintf("%s %.1f seeds/s per core", sys, float64(n)/secs))
		}
	}
	for _, c := range sum.Cells {
		if c.System == scenarios.Pipeline {
			v.Violating += c.Violating
			v.Unjudged += c.Inconcl + c.Refused
		}
		rendered := 0
		for _, group := range []struct {
			kind   string
			tokens []string
		}{{"violating", c.Failing}, {"inconclusive", c.Inconclusive}, {"refused", c.RefusedRuns}} {
			for _, tok := range group.tokens {
				ir := indexRun{Token: tok, Kind: group.kind}
				if rendered < opts.PerCell {
					rendered++
					if err := reportRun(runs, &ir, opts); err != nil {
						return err
					}
				} else {
					ir.Note = fmt.Sprintf("no report: past the first %d of this scenario and system", opts.PerCell)
				}
				v.Runs = append(v.Runs, ir)
			}
		}
	}
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, "index.html", v); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.html"), b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// reportRun replays ir's token and writes its report (and its shrunk
// form's) into dir.
func reportRun(dir string, ir *indexRun, opts CampaignOptions) error {
	r, err := scenarios.ParseRepro(ir.Token)
	if err != nil {
		return fmt.Errorf("report: campaign token %s: %w", ir.Token, err)
	}
	out, err := Replay(r)
	if err != nil {
		ir.Note = "replay failed: " + err.Error()
		return nil
	}
	if failed := out.Violated() || out.Refused() || out.Report.Verdict == checker.Inconclusive; !failed {
		ir.Note = "the replay held every claimed property: not drawn as a failure (a determinism bug; run repro --check-determinism)"
		return nil
	}
	name := FileName(ir.Token)
	if err := WriteFile(filepath.Join(dir, name), FromOutcome(out)); err != nil {
		return err
	}
	ir.Report = "runs/" + name
	if opts.Shrink != nil {
		small, err := opts.Shrink(r)
		if err != nil {
			ir.Note = "shrink failed: " + err.Error()
			return nil
		}
		sname := strings.TrimSuffix(name, ".html") + ".shrunk.html"
		run := FromOutcome(small)
		run.Notes = append(run.Notes, "shrunk from "+ir.Token)
		if err := WriteFile(filepath.Join(dir, sname), run); err != nil {
			return err
		}
		ir.Shrunk = "runs/" + sname
	}
	return nil
}

// Replay runs a simulated token again.
func Replay(r scenarios.Repro) (*scenarios.Outcome, error) {
	if r.World != "" {
		return nil, fmt.Errorf("%s: only simulated runs replay here", r)
	}
	sc, err := scenarios.Resolve(r.Scenario)
	if err != nil {
		return nil, err
	}
	return scenarios.Run(sc, r.System, r.Seed, r.Options())
}

// FileName is a report's file name for a repro token: the token with
// every byte a file name or a URL would need escaped turned into '_'.
func FileName(token string) string {
	b := []byte(token)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '=' || c == '+'
		if !ok {
			b[i] = '_'
		}
	}
	return string(b) + ".html"
}

// unclaimedNotes says, for each class with unclaimed anomalies, where
// they came from and which stores claim its property there, from the
// scenarios' own claims.
func unclaimedNotes(cfg scenarios.CampaignConfig, sum *scenarios.Summary, byName map[string]*scenarios.Scenario) []string {
	kinds := []struct {
		name string
		kind model.StoreKind
	}{{scenarios.ReplicaStore, model.Replica}, {scenarios.CacheStore, model.Cache}, {scenarios.SearchStore, model.Search}}
	var notes []string
	for _, sys := range cfg.Systems {
		for _, class := range checker.Classes {
			prop := class.Property()
			// Group the scenarios by who claims the property there.
			where := map[string][]string{}
			total := 0
			for _, c := range sum.Cells {
				n := c.Unclaimed[class]
				if c.System != sys || n == 0 {
					continue
				}
				total += n
				var claimants []string
				if sc := byName[c.Scenario]; sc != nil {
					for _, k := range kinds {
						if sc.Claims(sys, k.kind)[prop] {
							claimants = append(claimants, k.name)
						}
					}
				}
				who := "no store claims " + string(prop) + " there"
				if len(claimants) > 0 {
					who = string(prop) + " is claimed there by " + strings.Join(claimants, ", ") + " only"
				}
				if sc := byName[c.Scenario]; sc != nil && sc.Unclean && sys == scenarios.Pipeline {
					who += " (an unclean election may lose acknowledged records)"
				}
				where[who] = append(where[who], fmt.Sprintf("%s %d", c.Scenario, n))
			}
			if total == 0 {
				continue
			}
			whos := make([]string, 0, len(where))
			for w := range where {
				whos = append(whos, w)
			}
			sort.Strings(whos)
			var parts []string
			for _, w := range whos {
				parts = append(parts, strings.Join(where[w], ", ")+": "+w)
			}
			notes = append(notes, fmt.Sprintf("%s, %s: %d unclaimed (%s).", sys, class, total, strings.Join(parts, "; ")))
		}
	}
	return notes
}
