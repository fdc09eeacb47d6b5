package results

import (
	"encoding/xml"
	"fmt"
	"os"
	"strings"
	"time"
)

// JUnit XML as CI systems read it (the Jenkins xUnit plugin's junit-10.xsd,
// which GitHub, GitLab and Jenkins accept): one testsuite per scenario,
// one testcase per scenario and system.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Errors     int             `xml:"errors,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       string          `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr,omitempty"`
	Properties []junitProperty `xml:"properties>property"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string         `xml:"name,attr"`
	Classname string         `xml:"classname,attr"`
	Time      string         `xml:"time,attr"`
	Skipped   *junitMessage  `xml:"skipped"`
	Errors    []junitMessage `xml:"error"`
	Failures  []junitMessage `xml:"failure"`
	SystemOut *junitText     `xml:"system-out"`
}

// junitText is an element's text as CDATA, so the file stays readable.
type junitText struct {
	Text string `xml:",cdata"`
}

type junitMessage struct {
	Type    string `xml:"type,attr"`
	Message string `xml:"message,attr"`
	Body    string `xml:",cdata"`
}

// maxInJUnit is how many runs a failure or error element details.
const maxInJUnit = 20

// WriteJUnit writes the file as JUnit XML. A pipeline testcase fails when
// a run violated a claimed property: the failure names the failing seeds
// and gives each run's repro line and witnesses. Inconclusive and refused
// pipeline runs, and runs of either system that could not complete, are
// errors. Dual writes' violations are the expected finding: their
// testcase passes and says what was found in system-out.
func (f *File) WriteJUnit(path string) error {
	b, err := f.JUnit()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// JUnit is the file as JUnit XML.
func (f *File) JUnit() ([]byte, error) {
	root := junitSuites{Name: "lockstep campaign (" + f.World + ")", Time: seconds(time.Duration(f.Timing.WallNS))}
	for _, sc := range f.scenarioNames() {
		suite := junitSuite{Name: "lockstep/" + f.World + "/" + sc, Timestamp: f.Timing.Started, Properties: f.properties()}
		var suiteTime time.Duration
		for _, sys := range f.Config.Systems {
			c := f.Cell(sc, sys)
			if c == nil {
				continue
			}
			tc, d := f.testcase(c)
			suiteTime += d
			suite.Tests++
			switch {
			case tc.Skipped != nil:
				suite.Skipped++
			case len(tc.Errors) > 0:
				suite.Errors++
			case len(tc.Failures) > 0:
				suite.Failures++
			}
			suite.Cases = append(suite.Cases, tc)
		}
		suite.Time = seconds(suiteTime)
		root.Tests += suite.Tests
		root.Failures += suite.Failures
		root.Errors += suite.Errors
		root.Suites = append(root.Suites, suite)
	}
	out, err := xml.MarshalIndent(root, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode JUnit: %w", err)
	}
	return append([]byte(xml.Header), append(out, '\n')...), nil
}

func (f *File) properties() []junitProperty {
	p := []junitProperty{{"schema", f.Schema}, {"world", f.World}, {"first_seed", fmt.Sprint(f.Config.FirstSeed)},
		{"seeds", fmt.Sprint(f.Config.Seeds)}}
	for _, kv := range [][2]string{{"duration", f.Config.Duration}, {"shard", f.Config.Shard}} {
		if kv[1] != "" {
			p = append(p, junitProperty{kv[0], kv[1]})
		}
	}
	return p
}

// testcase is one cell as a testcase, and its runs' summed wall time.
func (f *File) testcase(c *Cell) (junitCase, time.Duration) {
	var d time.Duration
	for _, r := range c.Runs {
		d += time.Duration(r.Timing.WallNS)
	}
	tc := junitCase{Name: string(c.System), Classname: "lockstep." + f.World + "." + c.Scenario, Time: seconds(d)}
	out := fmt.Sprintf("%d seeds judged: %d violating, %d inconclusive, %d refused; %d runs could not complete; anomalies: %s\n",
		c.Seeds, c.Violating, c.Inconclusive, c.Refused, c.Errors, c.classesText())
	tc.SystemOut = &junitText{out}
	if len(c.Runs) == 0 {
		tc.Skipped = &junitMessage{Type: "no-runs", Message: "no seed of this scenario and system ran (the --duration was up first, or the shard holds none of its seeds)"}
		return tc, d
	}
	if c.Errors > 0 {
		tc.Errors = append(tc.Errors, runsMessage(c, Error, "harness", "%d of %d runs could not complete (a harness error, not the system's verdict)"))
	}
	if !c.System.Promises() {
		if c.Violating > 0 {
			tc.SystemOut.Text += fmt.Sprintf("dual writes violated a claimed property in %d of %d seeds: the expected finding, not a failure; e.g. lockstep repro %s\n",
				c.Violating, c.Seeds, firstToken(c, Violated))
		}
		return tc, d
	}
	if c.Inconclusive > 0 {
		tc.Errors = append(tc.Errors, runsMessage(c, Inconclusive, "inconclusive", "%d of %d seeds inconclusive (a check of a claimed property did not finish): not a pass"))
	}
	if c.Refused > 0 {
		tc.Errors = append(tc.Errors, runsMessage(c, Refused, "refused", "%d of %d seeds stopped on input the pipeline cannot capture: not a pass"))
	}
	if c.Violating > 0 {
		tc.Failures = append(tc.Failures, runsMessage(c, Violated, "violation", "%d of %d seeds violated a claimed property"))
	}
	return tc, d
}

// runsMessage is a failure or error element for a cell's runs of one
// verdict: the count and seeds in the message, each run's repro line and
// witnesses (or error) in the body.
func runsMessage(c *Cell, verdict, typ, format string) junitMessage {
	var seeds []string
	var body strings.Builder
	n, total := 0, c.Seeds
	if verdict == Error {
		total = len(c.Runs)
	}
	for _, r := range c.Runs {
		if r.Verdict != verdict {
			continue
		}
		n++
		seeds = append(seeds, fmt.Sprint(r.Seed))
		if n > maxInJUnit {
			continue
		}
		fmt.Fprintf(&body, "lockstep repro %s\n", r.Token)
		for _, v := range r.Violations {
			fmt.Fprintf(&body, "  %s\n", v)
		}
		for _, s := range []string{r.Stopped, r.Error} {
			if s != "" {
				fmt.Fprintf(&body, "  %s\n", s)
			}
		}
		if r.LogDir != "" {
			fmt.Fprintf(&body, "  logs: %s\n", r.LogDir)
		}
	}
	if n > maxInJUnit {
		fmt.Fprintf(&body, "... and %d more runs\n", n-maxInJUnit)
	}
	if len(seeds) > maxInJUnit {
		seeds = append(seeds[:maxInJUnit], "...")
	}
	msg := fmt.Sprintf(format, n, total) + " (seeds " + strings.Join(seeds, ", ") + "); replay: lockstep repro " + firstToken(c, verdict)
	return junitMessage{Type: typ, Message: msg, Body: body.String()}
}

func firstToken(c *Cell, verdict string) string {
	for _, r := range c.Runs {
		if r.Verdict == verdict {
			return r.Token
		}
	}
	return ""
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
