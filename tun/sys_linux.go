package tun

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// tunPath is the clone device every TUN is created through.
const tunPath = "/dev/net/tun"

// ipForwardPath is the IPv4 forwarding switch of the calling thread's
// network namespace.
const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// CheckPrivileges reports, in one line an operator can act on, whether the
// process lacks CAP_NET_ADMIN or cannot open /dev/net/tun. Daemons call it
// before anything else so that a missing privilege is not discovered as an
// obscure ioctl or netlink error halfway through startup.
func CheckPrivileges() error {
	program := filepath.Base(os.Args[0])
	if err := checkNetAdmin(); err != nil {
		return fmt.Errorf("%s needs CAP_NET_ADMIN (run as root or grant the capability): %w", program, err)
	}
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s needs %s (load the tun module, or pass the device into the container): failed to open it: %w", program, tunPath, err)
	}
	return unix.Close(fd)
}

// checkNetAdmin looks at the effective capability set of the calling thread;
// Go keeps the sets of all threads of a process equal.
func checkNetAdmin() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("failed to read capabilities: %w", err)
	}
	if data[0].Effective&(1<<unix.CAP_NET_ADMIN) == 0 {
		return errors.New("it is not in the effective capability set")
	}
	return nil
}

// EnableForwarding turns on IPv4 forwarding in the calling thread's network
// namespace, without which the kernel drops packets between the TUN and the
// egress interface instead of routing them.
func EnableForwarding() error {
	if err := setSysctl(ipForwardPath); err != nil {
		return fmt.Errorf("failed to enable IPv4 forwarding: %w", err)
	}
	return nil
}

// setSysctl writes 1 to a /proc/sys file unless it already holds 1. In a
// container /proc/sys is read-only, and the runtime sets the values
// (docker-compose sysctls:); writing only when needed lets 4over6d run
// there.
func setSysctl(path string) error {
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	return os.WriteFile(path, []byte("1\n"), 0)
}
