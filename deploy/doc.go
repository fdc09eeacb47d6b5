// Package deploy holds an example of lockstep's campaign on Kubernetes, for
// when one CI system is not enough: campaign-job.yaml, an Indexed Job whose
// completion index picks the shard, merge-job.yaml, which combines the
// shards, and the Dockerfile of their image. There is no Go code here: the
// package's test decodes the manifests with the Kubernetes API's own types,
// unknown fields refused, and runs their shell scripts for every index.
package deploy
