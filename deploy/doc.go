// Package deploy holds pushd's deployment files: Kubernetes manifests
// (kubernetes/), a systemd unit and its config (systemd/). It has no code;
// its test parses every manifest and validates every pushd config in them.
package deploy
