package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// perfEvent is a tracepoint perf stat counts, with its filter, as a counter.
type perfEvent struct {
	Name, Filter, Counter string
}

var (
	// syscallEvent counts every syscall entered.
	syscallEvent = perfEvent{Name: "raw_syscalls:sys_enter", Counter: countSyscalls}
	// udpRecvEvent counts the UDP datagrams a process reads: a socket
	// read of UDP (protocol 17) that returned data, one per datagram
	// also within recvmmsg. A QUIC tunnel's reads are its packets as long
	// as the socket does not coalesce them (UDP_GRO, which quic-go does
	// not set). Linux 6.2 and later.
	udpRecvEvent = perfEvent{Name: "sock:sock_recv_length", Filter: "protocol == 17 && ret > 0", Counter: countUDPRecv}
)

// perfTimeout bounds each wait on perf: attaching and answering a command,
// or printing its counts and exiting.
const perfTimeout = 10 * time.Second

// perfStat is a running `perf stat -e EVENT... -p PIDS`, started with its
// counting off (-D -1) and switched on and off through its control pipe
// (--control fd:3,4), so that it counts exactly the measured phase: perf
// answers "ack" once the counters are on or off.
type perfStat struct {
	events []perfEvent
	cmd    *exec.Cmd
	ctl    *os.File      // perf's control pipe: "enable\n", "disable\n"
	ack    *os.File      // perf's answers, read through acks
	acks   *bufio.Reader //
	output bytes.Buffer  // perf's stderr: its notes and, at exit, the counts (-x,)
	done   chan struct{} // closed when perf has exited
}

// startPerfStat attaches perf stat to pids, counting events from enable
// to disable.
func startPerfStat(ctx context.Context, pids []int, events []perfEvent) (*perfStat, error) {
	path, err := exec.LookPath("perf")
	if err != nil {
		return nil, errors.New("perf is not installed")
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	ackR, ackW, err := os.Pipe()
	if err != nil {
		ctlR.Close()
		ctlW.Close()
		return nil, err
	}
	list := make([]string, len(pids))
	for i, pid := range pids {
		list[i] = strconv.Itoa(pid)
	}
	args := []string{"stat", "-x,", "-D", "-1", "--control", "fd:3,4", "-p", strings.Join(list, ",")}
	for _, e := range events {
		args = append(args, "-e", e.Name)
		if e.Filter != "" {
			args = append(args, "--filter", e.Filter)
		}
	}
	p := &perfStat{events: events, ctl: ctlW, ack: ackR, acks: bufio.NewReader(ackR), done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, path, args...)
	p.cmd.ExtraFiles = []*os.File{ctlR, ackW}
	p.cmd.Stderr = &p.output
	err = p.cmd.Start()
	ctlR.Close()
	ackW.Close()
	if err != nil {
		ctlW.Close()
		ackR.Close()
		return nil, fmt.Errorf("perf: %w", err)
	}
	go func() {
		p.cmd.Wait() // its exit status says nothing parsePerfStat does not
		close(p.done)
	}()
	return p, nil
}

// enable switches counting on; when it returns nil, perf counts.
func (p *perfStat) enable() error { return p.command("enable") }

// disable switches counting off.
func (p *perfStat) disable() error { return p.command("disable") }

// command sends perf a control command and waits for its ack.
func (p *perfStat) command(c string) error {
	if err := p.ack.SetReadDeadline(time.Now().Add(perfTimeout)); err != nil {
		return err
	}
	if _, err := p.ctl.WriteString(c + "\n"); err != nil {
		return p.failed(c, err)
	}
	line, err := p.acks.ReadString('\n')
	if err != nil {
		return p.failed(c, err)
	}
	// perf writes "ack\n" with its C string's NUL, which starts the next
	// line read.
	if line = strings.Trim(line, "\x00 \r\n"); line != "ack" {
		return fmt.Errorf("perf answered %q to %s", line, c)
	}
	return nil
}

// failed describes a command that got no ack: with the last line perf
// printed when it has exited (e.g. "No permission to enable
// raw_syscalls:sys_enter event").
func (p *perfStat) failed(c string, err error) error {
	select {
	case <-p.done:
		return fmt.Errorf("perf exited before it acknowledged %s: %s", c, lastLine(p.output.String()))
	case <-time.After(100 * time.Millisecond):
		return fmt.Errorf("perf did not acknowledge %s: %w", c, err)
	}
}

// finish stops perf with SIGINT, as a user's Ctrl-C, and returns what it
// counted by counter name.
func (p *perfStat) finish() (map[string]int64, error) {
	defer p.closePipes()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return nil, fmt.Errorf("perf: %w", err)
	}
	select {
	case <-p.done:
	case <-time.After(perfTimeout):
		p.kill()
		return nil, errors.New("perf did not exit after SIGINT")
	}
	return parsePerfStat(p.output.String(), p.events)
}

// kill ends perf without its counts.
func (p *perfStat) kill() {
	p.cmd.Process.Kill()
	<-p.done
	p.closePipes()
}

func (p *perfStat) closePipes() {
	p.ctl.Close()
	p.ack.Close()
}

// parsePerfStat returns the counts of events, by counter name, in the
// output of `perf stat -x,`, whose lines are "count,unit,event,run
// time,percent,..." ("<not counted>" or "<not supported>" in place of a
// count), between notes such as "Events enabled" and "# started on ...".
// Several lines of one event (one per process or thread) are summed. The
// error names the events without a count; the others are returned.
func parsePerfStat(out string, events []perfEvent) (map[string]int64, error) {
	counts := map[string]int64{}
	bad := map[string]string{} // event → what perf printed in place of its count
	for line := range strings.Lines(out) {
		f := strings.Split(strings.TrimSpace(line), ",")
		if len(f) < 3 {
			continue
		}
		i := slices.IndexFunc(events, func(e perfEvent) bool { return e.Name == f[2] })
		if i < 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			bad[f[2]] = f[0]
			continue
		}
		counts[events[i].Counter] += n
	}
	var missing []string
	for _, e := range events {
		_, counted := counts[e.Counter]
		switch {
		case bad[e.Name] != "":
			delete(counts, e.Counter)
			missing = append(missing, e.Name+" "+bad[e.Name])
		case !counted:
			missing = append(missing, "no count of "+e.Name)
		}
	}
	switch {
	case len(counts) == 0:
		return counts, fmt.Errorf("perf: %s: %s", strings.Join(missing, ", "), lastLine(out))
	case len(missing) > 0:
		return counts, fmt.Errorf("perf: %s", strings.Join(missing, ", "))
	}
	return counts, nil
}

// lastLine returns the last non-blank line of s, or "(nothing)".
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		return last
	}
	return "(nothing)"
}

// probePerf returns the events among want that perf stat counts here,
// checked by counting this process's syscalls and UDP reads for a moment,
// and why the others are not counted. perf is started once with every
// event, and once per event when that fails, so that one missing
// tracepoint (sock:sock_recv_length before Linux 6.2) does not lose the
// others.
func probePerf(ctx context.Context, want []perfEvent) ([]perfEvent, []string) {
	if err := probeEvents(ctx, want); err == nil {
		return want, nil
	}
	var ok []perfEvent
	var why []string
	for _, e := range want {
		if err := probeEvents(ctx, []perfEvent{e}); err != nil {
			why = append(why, fmt.Sprintf("%s: %v", e.Name, err))
			continue
		}
		ok = append(ok, e)
	}
	return ok, why
}

// probeEvents counts events in this process while it makes 10 syscalls
// and reads a UDP datagram, and fails unless perf counted them.
func probeEvents(ctx context.Context, events []perfEvent) error {
	a, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer a.Close()
	p, err := startPerfStat(ctx, []int{os.Getpid()}, events)
	if err != nil {
		return err
	}
	if err := p.enable(); err != nil {
		p.kill()
		return err
	}
	for range 10 {
		syscall.Getppid()
	}
	_, err = a.WriteTo([]byte("probe"), a.LocalAddr())
	if err == nil {
		a.SetReadDeadline(time.Now().Add(time.Second))
		_, _, err = a.ReadFrom(make([]byte, 16))
	}
	if err != nil {
		p.kill()
		return err
	}
	if err := p.disable(); err != nil {
		p.kill()
		return err
	}
	counts, err := p.finish()
	if err != nil {
		return err
	}
	if n := counts[countSyscalls]; slices.Contains(events, syscallEvent) && n < 10 {
		return fmt.Errorf("perf counted %d syscalls where 10 were made", n)
	}
	if n := counts[countUDPRecv]; slices.Contains(events, udpRecvEvent) && n != 1 {
		return fmt.Errorf("perf counted %d UDP datagrams read where 1 was", n)
	}
	return nil
}
