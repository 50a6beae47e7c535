package testenv

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// childEnv marks the copy of this test binary that plays the test giving up.
const childEnv = "IMPRINT_TESTENV_CHILD"

// TestChildGivesUp is the test under observation: it runs only inside the
// child process started by TestStrictTurnsSkipsIntoFailures.
func TestChildGivesUp(t *testing.T) {
	which := os.Getenv(childEnv)
	if which == "" {
		return // not the child
	}
	switch which {
	case "Require":
		Require(t, false, "the widget is missing")
	case "Need":
		Need(t, errors.New("the widget is missing"))
	case "NeedTool":
		NeedTool(t, "imprint-no-such-tool-the-widget-is-missing")
	case "NeedFile":
		NeedFile(t, "/nonexistent/the-widget-is-missing", "widget")
	case "Optional":
		if Optional(t, false, "the widget is missing") {
			t.Error("Optional(false) said the part can run")
		}
		t.Skip("the rest of the test ran") // stands for a pass, in the SKIP the table expects
	}
	t.Log("CHILD-GOT-PAST-THE-CHECK")
}

func TestStrictTurnsSkipsIntoFailures(t *testing.T) {
	for _, check := range []string{"Require", "Need", "NeedTool", "NeedFile", "Optional"} {
		for _, tc := range []struct {
			strict   string
			wantFail bool
			want     string
		}{
			{"", false, "--- SKIP: TestChildGivesUp"},
			{"0", false, "--- SKIP: TestChildGivesUp"},
			{"1", true, "--- FAIL: TestChildGivesUp"},
		} {
			t.Run(check+"/"+StrictEnv+"="+tc.strict, func(t *testing.T) {
				cmd := exec.Command(os.Args[0], "-test.run=^TestChildGivesUp$", "-test.v")
				cmd.Env = append(os.Environ(), childEnv+"="+check, StrictEnv+"="+tc.strict)
				out, err := cmd.CombinedOutput()
				var exit *exec.ExitError
				failed := errors.As(err, &exit)
				if err != nil && !failed {
					t.Fatal(err)
				}
				if failed != tc.wantFail {
					t.Errorf("child failed = %v, want %v\n%s", failed, tc.wantFail, out)
				}
				if !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "widget") {
					t.Errorf("child output lacks %q and the reason:\n%s", tc.want, out)
				}
				if strings.Contains(string(out), "CHILD-GOT-PAST-THE-CHECK") {
					t.Errorf("the child test went on after giving up:\n%s", out)
				}
			})
		}
	}
}

func TestToolFindsInstalledPrograms(t *testing.T) {
	if p := Tool(t, "sh"); p == "" {
		t.Fatal("sh not found")
	}
}
