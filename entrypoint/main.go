// Command trialforge-entrypoint runs a trial's trainer for the collector's stdout
// metrics source, in place of the trainer image's shell.
//
// The operator copies it into the pod's shared volume (an init container runs
// `trialforge-entrypoint install /trialforge/bin`) and makes the trainer's command
// `/trialforge/bin/trialforge-entrypoint -- CMD ARGS...`. It then:
//
//   - starts CMD with stdout and stderr on one pipe, and copies that pipe both to
//     its own stdout (so `kubectl logs` shows the output) and to
//     $TRIALFORGE_SHARED_DIR/stdout.log, which the collector reads;
//   - forwards every signal a container gets (SIGTERM when the pod is deleted:
//     pruned, cancelled, paused, preempted, evicted) to CMD at once. A shell as
//     PID 1 would ignore SIGTERM, and the trainer would only see the SIGKILL at
//     the end of the grace period, too late to save a checkpoint;
//   - reaps the orphans that PID 1 inherits;
//   - when CMD ends, writes its exit code (128+N for a signal N, as shells do)
//     atomically to $TRIALFORGE_SHARED_DIR/exit-code once the output is
//     complete, and exits with the same code, so the pod completes as CMD did.
//
// Static and standard library only: the trainer image needs no shell, no tee and
// no Python for it.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

const (
	name          = "trialforge-entrypoint"
	version       = "1"
	envSharedDir  = "TRIALFORGE_SHARED_DIR" // metrics/contract.py: ENV_SHARED_DIR
	defaultShared = "/trialforge"           // SHARED_DIR
	stdoutFile    = "stdout.log"            // STDOUT_FILE
	exitFile      = "exit-code"             // EXIT_FILE
	// How long the output may stay open after CMD ended (a background process of
	// CMD's that holds the pipe): the trainer's own output is complete by then.
	drainTimeout = 2 * time.Second
)

// The signals a container runtime or a user sends to a container; SIGKILL and
// SIGSTOP cannot be caught, SIGCHLD is ours.
var forwarded = []os.Signal{
	syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGCONT,
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func usage() {
	fmt.Fprintf(os.Stderr, `usage:
  %[1]s -- COMMAND [ARG...]   run COMMAND for the collector (see the package doc)
  %[1]s install DIR           copy this program to DIR/%[1]s
  %[1]s --version
`, name)
}

func run(args []string) int {
	if len(args) == 0 {
		usage()
		return 2
	}
	switch args[0] {
	case "--":
		if len(args) < 2 {
			usage()
			return 2
		}
		return trainer(args[1:])
	case "install":
		if len(args) != 2 {
			usage()
			return 2
		}
		if err := install(args[1]); err != nil {
			fmt.Fprintf(os.Stderr, "%s: install: %v\n", name, err)
			return 1
		}
		return 0
	case "--version":
		fmt.Println(name, version)
		return 0
	case "-h", "--help":
		usage()
		return 0
	}
	usage()
	return 2
}

// install copies the running executable to dir, atomically.
func install(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	src, err := os.Open(self)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}

func sharedDir() string {
	if d := os.Getenv(envSharedDir); d != "" {
		return d
	}
	return defaultShared
}

func trainer(command []string) int {
	dir := sharedDir()
	os.Remove(filepath.Join(dir, exitFile))
	// Asked for before CMD starts, so a signal that comes early is not lost.
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, forwarded...)

	var sink io.Writer = os.Stdout
	log, err := os.OpenFile(filepath.Join(dir, stdoutFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: the collector will not see the output: %v\n", name, err)
	} else {
		defer log.Close()
		// A full or gone log file must not stop the output reaching the container log.
		sink = io.MultiWriter(os.Stdout, &lenient{w: log})
	}

	code := start(command, sink, signals)
	if log != nil {
		log.Sync()
	}
	if err := writeExitCode(dir, code); err != nil {
		fmt.Fprintf(os.Stderr, "%s: exit code not recorded: %v\n", name, err)
	}
	return code
}

// start runs command to its end and returns its exit code.
func start(command []string, sink io.Writer, signals <-chan os.Signal) int {
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, w, w
	if err := cmd.Start(); err != nil {
		w.Close()
		r.Close()
		fmt.Fprintf(sink, "%s: %s: %v\n", name, command[0], err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return 127
		}
		return 126
	}
	w.Close()
	drained := make(chan struct{})
	go func() {
		io.Copy(sink, r)
		close(drained)
	}()
	pid := cmd.Process.Pid
	go func() {
		for s := range signals {
			syscall.Kill(pid, s.(syscall.Signal))
		}
	}()

	code := reap(pid)
	select {
	case <-drained:
	case <-time.After(drainTimeout):
	}
	r.Close()
	return code
}

// reap waits for any child (PID 1 inherits orphans) until pid has ended.
func reap(pid int) int {
	for {
		var status syscall.WaitStatus
		got, err := syscall.Wait4(-1, &status, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: wait: %v\n", name, err)
			return 1
		}
		if got != pid {
			continue
		}
		switch {
		case status.Exited():
			return status.ExitStatus()
		case status.Signaled():
			return 128 + int(status.Signal())
		}
	}
}

func writeExitCode(dir string, code int) error {
	tmp := filepath.Join(dir, "."+exitFile+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(code)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, exitFile))
}

// lenient drops writes after the first error, so one failing writer does not end
// io.MultiWriter's other.
type lenient struct {
	w      io.Writer
	failed bool
}

func (l *lenient) Write(p []byte) (int, error) {
	if !l.failed {
		if _, err := l.w.Write(p); err != nil {
			l.failed = true
			fmt.Fprintf(os.Stderr, "%s: the collector will not see the rest of the output: %v\n", name, err)
		}
	}
	return len(p), nil
}
