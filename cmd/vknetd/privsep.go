package main

// giveUpRoot, with --user: start the keeper (which removes the sockets,
// the pidfile and the devices the daemon created once the daemon is gone), then become the user with only
// CAP_NET_ADMIN. Called once everything that needs root exists and before
// any client is served.
func (d *daemon) giveUpRoot() error {
	if d.runAs == nil {
		return nil
	}
	var files []keptFile
	for _, l := range d.listeners {
		if l.ino != 0 {
			files = append(files, keptFile{path: l.path, dev: l.dev, ino: l.ino})
		}
	}
	files = append(files, keptFile{path: d.pid.path, dev: d.pid.dev, ino: d.pid.ino})
	logTo := "syslog"
	if d.o.debug {
		logTo = "stderr"
	}
	k, err := startKeeper(files, d.tap.Created(), d.pid.f, logTo, d.runAs.uid)
	if err != nil {
		return err
	}
	d.keeper = k
	// The keeper's copy of the pidfile holds the lock from now on. The
	// daemon keeps no writable descriptor to a root file that systemd
	// reads a pid from (PIDFile=).
	d.pid.f.Close()
	d.pid.f = nil
	caps, err := dropPrivileges(d.runAs)
	if err != nil {
		return err
	}
	d.log.Info("gave up root", "user", d.runAs.name, "uid", d.runAs.uid, "gid", d.runAs.gid,
		"groups", describeGroups(d.runAs.groups), "capabilities", caps, "keeper_pid", k.pid())
	return nil
}

// userName is who the daemon runs as, for the log.
func (d *daemon) userName() string {
	if d.runAs == nil {
		return "root"
	}
	return d.runAs.name
}
