package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestEveryCommandHasHelp: `pushd <cmd> --help` (and -h) exits 0 and says
// how to use that command, for every command in the table.
func TestEveryCommandHasHelp(t *testing.T) {
	for name := range commands {
		for _, flag := range []string{"--help", "-h"} {
			t.Run(name+" "+flag, func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				code := dispatch([]string{name, flag}, strings.NewReader(""), &stdout, &stderr)
				if code != exitOK {
					t.Errorf("exit %d, want %d; stderr:\n%s", code, exitOK, stderr.String())
				}
				out := stdout.String() + stderr.String()
				if !strings.Contains(out, "Usage: pushd "+name) {
					t.Errorf("help does not start with the command's usage line; got:\n%s", out)
				}
				if len(strings.Split(strings.TrimSpace(out), "\n")) < 3 {
					t.Errorf("help is a single line; want a description of the command; got:\n%s", out)
				}
			})
		}
	}
}

// TestDispatchUsage: the top-level help and the errors around it.
func TestDispatchUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{name: "no command", args: nil, code: exitUsage, want: "Commands:"},
		{name: "help", args: []string{"help"}, code: exitOK, want: "Commands:"},
		{name: "--help", args: []string{"--help"}, code: exitOK, want: "Commands:"},
		{name: "unknown command", args: []string{"bogus"}, code: exitUsage, want: `unknown command "bogus"`},
		{name: "version with an argument", args: []string{"version", "extra"}, code: exitUsage, want: "Usage: pushd version"},
		{name: "schema without infer", args: []string{"schema"}, code: exitUsage, want: "Usage: pushd schema infer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := dispatch(tc.args, strings.NewReader(""), &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out)
			}
		})
	}
}
