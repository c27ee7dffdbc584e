package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/4over6d/4over6d/cmd/internal/logflag"
)

// dnsFlags registers -dns-apply, -dns-state and -restore-dns; kept here,
// beside the backends they choose.
func (o *options) dnsFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.dnsApply, "dns-apply", "",
		"use the server's DNS servers: auto (systemd-resolved on the TUN link, else resolvconf, else rewrite /etc/resolv.conf), "+
			"resolved, resolvconf, or the path of a resolv.conf file to rewrite (its nameserver lines are replaced, search and options kept, "+
			"the original saved in -dns-state); undone on exit, and after a crash by the next start or -restore-dns")
	fs.StringVar(&o.dnsState, "dns-state", defaultDNSState,
		"directory where -dns-apply saves what it changed (a file's original, a resolvconf record's name), so that a crash can be undone")
	fs.BoolVar(&o.restoreDNS, "restore-dns", false,
		"undo the DNS changes a killed 4over6c left (from -dns-state) and exit; needs no -server")
}

// checkDNS validates the DNS flags.
func (o *options) checkDNS() error {
	switch {
	case o.dnsApply != "" && strings.HasSuffix(o.dnsApply, "/"):
		return fmt.Errorf("-dns-apply %q: want auto, resolved, resolvconf or a file path, not a directory", o.dnsApply)
	case o.dnsState == "":
		return errors.New("-dns-state: want a directory")
	}
	return nil
}

// restoreOnly finishes parsing for -restore-dns, which ignores the
// tunnel's flags.
func (o *options) restoreOnly(level, format string) (*options, error) {
	if err := o.checkDNS(); err != nil {
		return nil, err
	}
	var err error
	if o.log, err = logflag.Parse(level, format); err != nil {
		return nil, err
	}
	return o, nil
}
