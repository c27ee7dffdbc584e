//go:build linux

package actors

// abandon drops the etcd client without revoking the node's lease: what a
// kill -9 leaves behind, for tests of a dead node.
func (f *Fleet) abandon() {
	f.closeOnce.Do(func() { _ = f.cli.Close() })
}
