package main

// These tests run the built program, as a pod would: a child process with real
// signals, pipes and exit statuses.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "entrypoint-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, name)
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// entrypoint starts the program over a fresh shared dir.
func entrypoint(t *testing.T, args ...string) (*exec.Cmd, string, *bytes.Buffer) {
	t.Helper()
	shared := t.TempDir()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), envSharedDir+"="+shared)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return cmd, shared, &out
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var exit *exec.ExitError
	if e, ok := err.(*exec.ExitError); ok {
		exit = e
		return exit.ExitCode()
	}
	t.Fatalf("not an exit: %v", err)
	return -1
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor polls for a file: the liveness guard of a test, not a measurement.
func waitFor(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never appeared", path)
}

func TestOutputReachesStdoutAndTheSharedFile(t *testing.T) {
	cmd, shared, out := entrypoint(t, "--", "sh", "-c", "echo one; echo two >&2; exit 3")
	if err := os.WriteFile(filepath.Join(shared, exitFile), []byte("stale\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code := exitCode(t, cmd.Run())
	if code != 3 {
		t.Fatalf("exit code %d, want the command's 3", code)
	}
	if got := out.String(); got != "one\ntwo\n" {
		t.Fatalf("container output %q", got)
	}
	if got := read(t, filepath.Join(shared, stdoutFile)); got != "one\ntwo\n" {
		t.Fatalf("stdout.log %q", got)
	}
	if got := read(t, filepath.Join(shared, exitFile)); got != "3\n" {
		t.Fatalf("exit-code %q", got)
	}
}

func TestTheOutputIsAppendedAcrossAttemptsOfTheContainer(t *testing.T) {
	cmd, shared, _ := entrypoint(t, "--", "echo", "second")
	if err := os.WriteFile(filepath.Join(shared, stdoutFile), []byte("first\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(shared, stdoutFile)); got != "first\nsecond\n" {
		t.Fatalf("stdout.log %q", got)
	}
}

func TestSIGTERMReachesTheTrainer(t *testing.T) {
	dir := t.TempDir()
	ready, seen := filepath.Join(dir, "ready"), filepath.Join(dir, "seen")
	script := "trap 'echo term > " + seen + "; exit 7' TERM; touch " + ready + "; while :; do sleep 0.05; done"
	cmd, shared, _ := entrypoint(t, "--", "sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ready)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := exitCode(t, cmd.Wait())
	if code != 7 {
		t.Fatalf("exit code %d, want the trap's 7", code)
	}
	if got := read(t, seen); got != "term\n" {
		t.Fatalf("the trainer did not see SIGTERM: %q", got)
	}
	if got := read(t, filepath.Join(shared, exitFile)); got != "7\n" {
		t.Fatalf("exit-code %q", got)
	}
}

func TestATrainerKilledByASignalExitsAsAShellSays(t *testing.T) {
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	// exec: the signal's default action ends the trainer itself, not a shell.
	cmd, shared, _ := entrypoint(t, "--", "sh", "-c", "touch "+ready+"; exec sleep 60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ready)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, cmd.Wait()); code != 128+int(syscall.SIGTERM) {
		t.Fatalf("exit code %d, want 143", code)
	}
	if got := read(t, filepath.Join(shared, exitFile)); got != "143\n" {
		t.Fatalf("exit-code %q", got)
	}
}

func TestAMissingCommandIs127(t *testing.T) {
	cmd, shared, out := entrypoint(t, "--", "no-such-trainer-here")
	if code := exitCode(t, cmd.Run()); code != 127 {
		t.Fatalf("exit code %d, want 127", code)
	}
	if !strings.Contains(out.String(), "no-such-trainer-here") {
		t.Fatalf("the error does not name the command: %q", out.String())
	}
	if !strings.Contains(read(t, filepath.Join(shared, stdoutFile)), "no-such-trainer-here") {
		t.Fatal("the error is not in stdout.log, where the collector and the Trial's log tail read")
	}
	if got := read(t, filepath.Join(shared, exitFile)); got != "127\n" {
		t.Fatalf("exit-code %q", got)
	}
}

func TestABackgroundChildHoldingTheOutputDoesNotKeepThePodRunning(t *testing.T) {
	cmd, shared, _ := entrypoint(t, "--", "sh", "-c", "sleep 60 & echo done")
	if code := exitCode(t, cmd.Run()); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if got := read(t, filepath.Join(shared, stdoutFile)); got != "done\n" {
		t.Fatalf("stdout.log %q", got)
	}
}

func TestAnUnwritableSharedDirStillRunsTheTrainer(t *testing.T) {
	cmd := exec.Command(binary, "--", "sh", "-c", "echo hello; exit 4")
	cmd.Env = append(os.Environ(), envSharedDir+"="+filepath.Join(t.TempDir(), "missing"))
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if code := exitCode(t, cmd.Run()); code != 4 {
		t.Fatalf("exit code %d", code)
	}
	if stdout.String() != "hello\n" {
		t.Fatalf("stdout %q", stdout.String())
	}
}

func TestInstallCopiesAnExecutable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bin")
	if out, err := exec.Command(binary, "install", dir).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	out, err := exec.Command(filepath.Join(dir, name), "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), name+" ") {
		t.Fatalf("the installed copy does not run: %v %q", err, out)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{{}, {"--"}, {"install"}, {"bogus"}} {
		if code := exitCode(t, exec.Command(binary, args...).Run()); code != 2 {
			t.Fatalf("%v: exit code %d, want 2", args, code)
		}
	}
}
