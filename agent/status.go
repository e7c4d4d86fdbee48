package agent

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/fleetplane/fleetplane/agent/apply"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// Device summary and update statuses the agent reports.
const (
	summaryOnline    = "Online"
	summaryDegraded  = "Degraded"
	updatedUpToDate  = "UpToDate"
	updatedOutOfDate = "OutOfDate"
)

// Host reads facts about the machine the agent runs on.
type Host interface {
	// SystemInfo returns the host's architecture, operating system, hostname and boot id.
	SystemInfo() *fleetplanev1.DeviceSystemInfo
	// Usage returns CPU, memory and disk use in percent; a value that cannot be read is 0.
	Usage() *fleetplanev1.DeviceResourceUsage
}

// ProcHost reads host facts from /proc and from statfs of a directory.
type ProcHost struct {
	// DiskPath is the directory whose file system Usage reports.
	DiskPath string

	mu      sync.Mutex
	lastCPU cpuTimes
}

// SystemInfo returns the host's facts. Fields it cannot read are empty.
func (h *ProcHost) SystemInfo() *fleetplanev1.DeviceSystemInfo {
	hostname, _ := os.Hostname()
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return &fleetplanev1.DeviceSystemInfo{
		Architecture:    runtime.GOARCH,
		OperatingSystem: runtime.GOOS,
		Hostname:        hostname,
		BootId:          strings.TrimSpace(string(bootID)),
	}
}

// Usage returns CPU use since the previous call (since boot on the first call), memory use
// and the disk use of DiskPath.
func (h *ProcHost) Usage() *fleetplanev1.DeviceResourceUsage {
	u := &fleetplanev1.DeviceResourceUsage{
		MemoryPercent: memoryPercent(),
		DiskPercent:   diskPercent(h.DiskPath),
	}
	if now, ok := readCPUTimes(); ok {
		h.mu.Lock()
		u.CpuPercent = now.percentSince(h.lastCPU)
		h.lastCPU = now
		h.mu.Unlock()
	}
	return u
}

// cpuTimes are the total and idle jiffies of the "cpu" line of /proc/stat.
type cpuTimes struct {
	total, idle uint64
}

func readCPUTimes() (cpuTimes, bool) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, false
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 5 || fields[0] != "cpu" {
		return cpuTimes{}, false
	}
	var t cpuTimes
	for i, f := range fields[1:] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return cpuTimes{}, false
		}
		t.total += n
		// The fourth and fifth values are idle and iowait.
		if i == 3 || i == 4 {
			t.idle += n
		}
	}
	return t, true
}

func (t cpuTimes) percentSince(prev cpuTimes) float64 {
	total := t.total - prev.total
	if total == 0 || t.total < prev.total {
		return 0
	}
	return 100 * float64(total-(t.idle-prev.idle)) / float64(total)
}

// memoryPercent returns the share of memory not available to new programs, from MemTotal and
// MemAvailable in /proc/meminfo.
func memoryPercent() float64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	var total, available float64
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 2 {
			continue
		}
		n, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "MemTotal:":
			total = n
		case "MemAvailable:":
			available = n
		}
	}
	if total == 0 {
		return 0
	}
	return 100 * (total - available) / total
}

// statusBuilder assembles the DeviceStatus reports of one agent.
type statusBuilder struct {
	host         Host
	agentVersion string
	info         *fleetplanev1.DeviceSystemInfo
}

func (b *statusBuilder) systemInfo() *fleetplanev1.DeviceSystemInfo {
	if b.info == nil {
		b.info = b.host.SystemInfo()
		b.info.AgentVersion = b.agentVersion
	}
	return b.info
}

// build returns a status report for the given versions.
func (b *statusBuilder) build(v apply.Versions) *fleetplanev1.DeviceStatus {
	s := &fleetplanev1.DeviceStatus{
		Summary:    &fleetplanev1.DeviceSummaryStatus{Status: summaryOnline},
		Updated:    &fleetplanev1.DeviceUpdatedStatus{Status: updatedUpToDate},
		Config:     &fleetplanev1.DeviceConfigStatus{RenderedVersion: v.Applied},
		SystemInfo: b.systemInfo(),
		Resources:  &fleetplanev1.DeviceResourceStatus{Usage: b.host.Usage()},
	}
	if v.LastRejected() {
		info := "rendered version " + v.Rejected + " was rejected: " + v.RejectedError
		s.Summary = &fleetplanev1.DeviceSummaryStatus{Status: summaryDegraded, Info: info}
		s.Updated = &fleetplanev1.DeviceUpdatedStatus{Status: updatedOutOfDate, Info: info}
	}
	return s
}
