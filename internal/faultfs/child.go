package faultfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// envServe tells a test binary run by Mount to serve the filesystem.
const envServe = "FAULTFS_SERVE"

// ServeIfChild serves the filesystem and exits when this process is the
// child Mount started; otherwise it returns at once. Call it first in the
// TestMain of every package that calls Mount.
func ServeIfChild() {
	spec := os.Getenv(envServe)
	if spec == "" {
		return
	}
	backing, mnt, _ := strings.Cut(spec, "\n")
	os.Exit(serve(backing, mnt, os.Stdin, os.Stdout))
}

// serve mounts, says "ready", then answers one command a line until
// "quit" or end of input: "arm FAULT N STICKY", "disarm", "counts".
func serve(backing, mnt string, in io.Reader, out io.Writer) int {
	st := &state{}
	srv, err := mount(backing, mnt, st)
	if err != nil {
		fmt.Fprintf(out, "error %v\n", err)
		return 1
	}
	defer func() {
		if srv.Unmount() != nil {
			// A file still open under the mount (a parent that died
			// mid-test) keeps it busy: detach it so nothing is left behind.
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
		srv.Wait()
	}()
	fmt.Fprintln(out, "ready")
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 4 && f[0] == "arm":
			k, _ := strconv.Atoi(f[1])
			n, _ := strconv.Atoi(f[2])
			st.arm(Fault(k), n, f[3] == "1")
			fmt.Fprintln(out, "ok")
		case len(f) == 1 && f[0] == "disarm":
			fmt.Fprintln(out, st.disarm())
		case len(f) == 1 && f[0] == "counts":
			w, s, n := st.counts()
			fmt.Fprintln(out, w, s, n)
		case len(f) == 1 && f[0] == "quit":
			return 0
		default:
			fmt.Fprintf(out, "error unknown command %q\n", sc.Text())
		}
	}
	return 0
}

// FS is a fault-injecting passthrough of a directory, mounted and served
// by a child process.
type FS struct {
	// Dir is the mount point: open files here.
	Dir string

	mu  sync.Mutex
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// Mount mounts a passthrough of backing at mountpoint, served by this
// executable run again (its TestMain must call ServeIfChild). Unmount with
// Close.
func Mount(backing, mountpoint string) (*FS, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envServe+"="+backing+"\n"+mountpoint)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	f := &FS{Dir: mountpoint, cmd: cmd, in: in, out: bufio.NewReader(out)}
	line, err := f.out.ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("faultfs: %s%v", strings.TrimPrefix(line, "error "), err)
	}
	return f, nil
}

func (f *FS) call(cmd string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	fmt.Fprintln(f.in, cmd)
	line, err := f.out.ReadString('\n')
	if err != nil {
		panic(fmt.Sprintf("faultfs server gone: %v", err))
	}
	return strings.TrimSpace(line)
}

// Close unmounts and waits for the server to exit.
func (f *FS) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fmt.Fprintln(f.in, "quit")
	f.in.Close()
	err := f.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("faultfs server: %w", err)
	}
	return err
}

// OpenFile opens a file under the mount point: bbolt's Options.OpenFile.
func (f *FS) OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag, perm)
}

// Arm makes the nth next operation of the fault's class (writes, or
// syncs) fail; n counts from 1. With sticky, every later one fails too.
func (f *FS) Arm(fault Fault, n int, sticky bool) {
	s := "0"
	if sticky {
		s = "1"
	}
	f.call(fmt.Sprintf("arm %d %d %s", int(fault), n, s))
}

// Disarm stops injecting and returns how many faults fired.
func (f *FS) Disarm() int {
	n, _ := strconv.Atoi(f.call("disarm"))
	return n
}

// Counts returns the write and sync requests served, and the faults
// fired since Arm.
func (f *FS) Counts() (writes, syncs int64, fired int) {
	fmt.Sscan(f.call("counts"), &writes, &syncs, &fired)
	return
}

// Syncs is how many fsync/fdatasync requests were served.
func (f *FS) Syncs() int64 {
	_, s, _ := f.Counts()
	return s
}
