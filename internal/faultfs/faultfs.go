// Package faultfs is a FUSE passthrough filesystem for tests that injects
// disk faults into a real file: EIO or ENOSPC on a write, a torn write, a
// short write, EIO on fsync/fdatasync with the data kept or lost. Because
// it is a filesystem, the faults are in the kernel's path: bbolt's
// Options.OpenFile must return an *os.File, and a file opened under the
// mount point is one, with every write and fdatasync served here.
//
// Mounting needs /dev/fuse and root (the mount(2) syscall is made
// directly: no fusermount is needed).
//
// The filesystem is served by a child process (the test binary run again,
// see ServeIfChild): a process must not serve FUSE for files it maps into
// memory itself, as bbolt does, since a page fault on the map then blocks
// a thread the Go runtime needs to stop for garbage collection, and the
// server goroutine that would answer the fault never runs.
package faultfs

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Fault is a kind of injected failure.
type Fault int

// Faults. Write faults fire on the Nth write request after Arm, sync
// faults on the Nth fsync or fdatasync.
const (
	None Fault = iota
	// WriteEIO fails a write with EIO; nothing of it is written.
	WriteEIO
	// WriteENOSPC fails a write with ENOSPC (disk full); nothing is written.
	WriteENOSPC
	// TornWrite writes the first half of a write, then fails it with EIO.
	TornWrite
	// ShortWrite writes half and reports that many bytes, no error: the
	// writer must carry on with the rest.
	ShortWrite
	// SyncEIO fails an fsync with EIO although the data reached the disk.
	SyncEIO
	// SyncLost fails an fsync with EIO and undoes every write since the
	// last good sync: the disk never got them, the page cache did.
	SyncLost
)

var names = [...]string{"none", "write-eio", "write-enospc", "torn-write", "short-write", "sync-eio", "sync-lost"}

func (f Fault) String() string {
	if int(f) < len(names) {
		return names[f]
	}
	return fmt.Sprintf("fault(%d)", int(f))
}

// Faults lists every fault kind.
var Faults = []Fault{WriteEIO, WriteENOSPC, TornWrite, ShortWrite, SyncEIO, SyncLost}

func (f Fault) onSync() bool { return f == SyncEIO || f == SyncLost }

// state is the server's fault plan and counters.
type state struct {
	mu     sync.Mutex
	writes int64 // write requests served
	syncs  int64 // fsync and fdatasync requests served
	armed  Fault
	after  int  // fire when this many more operations of its class have passed
	sticky bool // keep failing after the first fault, until Disarm
	fired  int
}

// mount mounts a passthrough of backing at mountpoint, in this process.
func mount(backing, mountpoint string, f *state) (*fuse.Server, error) {
	root := &fs.LoopbackRoot{Path: backing}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return nil, err
	}
	root.Dev = uint64(st.Dev)
	//lint:ignore SA1019 NewNode is the loopback hook go-fuse v2.12 still calls; NodeWrapChilder needs a node type per child kind
	root.NewNode = func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &node{LoopbackNode: fs.LoopbackNode{RootData: r}, fs: f}
	}
	//lint:ignore SA1019 see above
	root.RootNode = root.NewNode(root, nil, "", &st)
	zero := time.Duration(0)
	srv, err := fs.Mount(mountpoint, root.RootNode, &fs.Options{
		// No attribute or entry caching: a file's size must be what the
		// backing file says after a SyncLost undo.
		EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{DirectMount: true, DirectMountStrict: true, FsName: "faultfs", Name: "faultfs"},
	})
	if err != nil {
		return nil, fmt.Errorf("mount faultfs at %s: %w", mountpoint, err)
	}
	return srv, nil
}

func (f *state) arm(fault Fault, n int, sticky bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed, f.after, f.sticky, f.fired = fault, n, sticky, 0
}

func (f *state) disarm() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.fired
	f.armed, f.fired = None, 0
	return n
}

func (f *state) counts() (writes, syncs int64, fired int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes, f.syncs, f.fired
}

// next counts one operation and returns the fault to inject into it.
func (f *state) next(sync bool) Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sync {
		f.syncs++
	} else {
		f.writes++
	}
	if f.armed == None || f.armed.onSync() != sync {
		return None
	}
	if f.after > 1 {
		f.after--
		return None
	}
	if f.fired > 0 && !f.sticky {
		return None
	}
	f.fired++
	return f.armed
}

type node struct {
	fs.LoopbackNode
	fs *state
}

var (
	_ fs.NodeOpener  = (*node)(nil)
	_ fs.NodeCreater = (*node)(nil)
)

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, ff, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return n.wrap(fh), ff, 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, ff, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return in, n.wrap(fh), ff, 0
}

func (n *node) wrap(fh fs.FileHandle) fs.FileHandle {
	lf := fh.(*fs.LoopbackFile)
	// The raw fd, for the undo log; the LoopbackFile owns it.
	var fd int
	if c, ok := fh.(interface{ PassthroughFd() (int, bool) }); ok {
		fd, _ = c.PassthroughFd()
	}
	return &file{lf: lf, fd: fd, fs: n.fs}
}

// file serves one open file. It deliberately implements no
// PassthroughFd: with kernel passthrough, writes would bypass the faults.
type file struct {
	lf *fs.LoopbackFile
	fd int
	fs *state

	mu   sync.Mutex
	undo []undo // writes since the last good sync, oldest first
}

type undo struct {
	off  int64
	old  []byte
	size int64 // file size before the write
}

var (
	_ fs.FileReader    = (*file)(nil)
	_ fs.FileWriter    = (*file)(nil)
	_ fs.FileFsyncer   = (*file)(nil)
	_ fs.FileReleaser  = (*file)(nil)
	_ fs.FileFlusher   = (*file)(nil)
	_ fs.FileGetattrer = (*file)(nil)
	_ fs.FileSetattrer = (*file)(nil)
	_ fs.FileAllocater = (*file)(nil)
)

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.lf.Read(ctx, buf, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	fault := f.fs.next(false)
	switch fault {
	case WriteEIO:
		return 0, syscall.EIO
	case WriteENOSPC:
		return 0, syscall.ENOSPC
	case TornWrite, ShortWrite:
		data = data[:len(data)/2]
	}
	f.remember(off, len(data))
	n, errno := f.lf.Write(ctx, data, off)
	if errno == 0 && fault == TornWrite {
		return 0, syscall.EIO
	}
	return n, errno
}

// remember keeps what a write overwrites, for SyncLost.
func (f *file) remember(off int64, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var st syscall.Stat_t
	if err := syscall.Fstat(f.fd, &st); err != nil {
		return
	}
	old := make([]byte, n)
	m, _ := syscall.Pread(f.fd, old, off)
	if m < 0 {
		m = 0
	}
	f.undo = append(f.undo, undo{off: off, old: old[:m], size: st.Size})
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	switch f.fs.next(true) {
	case SyncEIO:
		f.forget()
		return syscall.EIO
	case SyncLost:
		f.revert()
		return syscall.EIO
	}
	errno := f.lf.Fsync(ctx, flags)
	if errno == 0 {
		f.forget()
	}
	return errno
}

func (f *file) forget() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.undo = f.undo[:0]
}

// revert undoes the writes since the last good sync, newest first.
func (f *file) revert() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.undo) - 1; i >= 0; i-- {
		u := f.undo[i]
		syscall.Pwrite(f.fd, u.old, u.off)
		syscall.Ftruncate(f.fd, u.size)
	}
	f.undo = f.undo[:0]
}

func (f *file) Release(ctx context.Context) syscall.Errno { return f.lf.Release(ctx) }
func (f *file) Flush(ctx context.Context) syscall.Errno   { return f.lf.Flush(ctx) }
func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Getattr(ctx, out)
}
func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		// A truncate is a write too: bbolt grows the file with one.
		f.mu.Lock()
		var st syscall.Stat_t
		err := syscall.Fstat(f.fd, &st)
		if err == nil && int64(sz) < st.Size {
			old := make([]byte, st.Size-int64(sz))
			m, _ := syscall.Pread(f.fd, old, int64(sz))
			if m < 0 {
				m = 0
			}
			f.undo = append(f.undo, undo{off: int64(sz), old: old[:m], size: st.Size})
		} else if err == nil {
			f.undo = append(f.undo, undo{off: st.Size, size: st.Size})
		}
		f.mu.Unlock()
	}
	return f.lf.Setattr(ctx, in, out)
}
func (f *file) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	return f.lf.Allocate(ctx, off, size, mode)
}
