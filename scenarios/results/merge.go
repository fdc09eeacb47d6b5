package results

import (
	"errors"
	"fmt"
	"reflect"
	"slices"

	"lockstep/scenarios"
)

// Merge combines the files of one campaign's shards (campaign --shard i/N
// with the same other flags) into the file of the whole campaign: for a
// simulated campaign the unsharded campaign's file, apart from timing.
// Shards that are not there are listed in MissingShards (the verdict is
// then at best Unjudged). One unsharded file merges into itself. Files of
// different campaigns, or a shard given twice, are refused.
func Merge(files []*File) (*File, error) {
	if len(files) == 0 {
		return nil, errors.New("no file to merge")
	}
	first := files[0]
	base := first.Config
	base.Shard = ""
	count := 0
	got := map[int]bool{}
	for i, f := range files {
		if f.Schema != Schema {
			return nil, fmt.Errorf("file %d: schema %q, want %q", i+1, f.Schema, Schema)
		}
		if f.World != first.World {
			return nil, fmt.Errorf("file %d is of world %s, file 1 of %s: not one campaign", i+1, f.World, first.World)
		}
		c := f.Config
		c.Shard = ""
		if !reflect.DeepEqual(c, base) {
			return nil, fmt.Errorf("file %d ran %+v, file 1 %+v: not shards of one campaign", i+1, c, base)
		}
		if f.Config.Shard == "" {
			if len(files) > 1 {
				return nil, fmt.Errorf("file %d is a whole campaign, not a shard: nothing to merge it with", i+1)
			}
			continue
		}
		sh, err := scenarios.ParseShard(f.Config.Shard)
		if err != nil {
			return nil, fmt.Errorf("file %d: %w", i+1, err)
		}
		if count != 0 && sh.Count != count {
			return nil, fmt.Errorf("file %d is shard %s, file 1 of %d shards: not one campaign", i+1, sh, count)
		}
		count = sh.Count
		if got[sh.Index] {
			return nil, fmt.Errorf("shard %s given twice", sh)
		}
		got[sh.Index] = true
	}
	m := New(first.World, base)
	seen := map[string]bool{}
	for _, f := range files {
		for _, c := range f.Cells {
			for _, r := range c.Runs {
				if seen[r.Token] {
					return nil, fmt.Errorf("run %s is in two files", r.Token)
				}
				seen[r.Token] = true
				m.Add(c.Scenario, c.System, r)
			}
		}
		t := f.Timing
		if m.Timing.Started == "" || t.Started != "" && t.Started < m.Timing.Started {
			m.Timing.Started = t.Started
		}
		m.Timing.WallNS = max(m.Timing.WallNS, t.WallNS)
		m.Timing.Parallel += t.Parallel
		m.Timing.StoppedByDuration = m.Timing.StoppedByDuration || t.StoppedByDuration
	}
	for i := 1; i <= count; i++ {
		if !got[i] {
			m.MissingShards = append(m.MissingShards, i)
		}
	}
	slices.Sort(m.MissingShards)
	m.Finish()
	return m, nil
}
