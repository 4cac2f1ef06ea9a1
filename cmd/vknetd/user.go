package main

import (
	"fmt"
	"os/user"
	"strconv"
	"strings"
)

// runAs is the identity --user gives the daemon once everything that
// needs root exists.
type runAs struct {
	name   string
	uid    int
	gid    int   // the user's primary group
	groups []int // supplementary: the primary group and the socket group
}

// lookupUser resolves --user (a name, or a numeric uid with a passwd
// entry) before anything is created, so a typo changes nothing.
// socketGid joins the supplementary groups: the daemon keeps the group
// its sockets were given (unless that is root's group).
func lookupUser(name string, socketGid int) (*runAs, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("--user %s: no such user: create a system user for vknetd (useradd --system --no-create-home --shell /usr/sbin/nologin vknetd) and give its name", name)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("--user %s has a non-numeric uid %q", name, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("--user %s has a non-numeric gid %q", name, u.Gid)
	}
	if uid == 0 {
		return nil, fmt.Errorf("--user %s is uid 0, which would not give up root: name an unprivileged user, or leave --user out", name)
	}
	r := &runAs{name: u.Username, uid: uid, gid: gid, groups: []int{gid}}
	// Not group 0 though (--group root): root's group opens files of its
	// own, a privilege the daemon does not need to serve its sockets.
	if socketGid != gid && socketGid != 0 {
		r.groups = append(r.groups, socketGid)
	}
	return r, nil
}

// lookupUID resolves the user of --user-net: a uid as is (a tenant's
// clients need no passwd entry here), or a name with one.
func lookupUID(name string) (int32, error) {
	if n, err := strconv.ParseInt(name, 10, 32); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("uid %d is negative", n)
		}
		return int32(n), nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, fmt.Errorf("no such user %q: give an existing user name or a uid", name)
	}
	uid, err := strconv.ParseInt(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %s has a non-numeric uid %q", name, u.Uid)
	}
	return int32(uid), nil
}

// describeGroups is the supplementary groups for the log.
func describeGroups(gids []int) string {
	s := make([]string, len(gids))
	for i, g := range gids {
		s[i] = strconv.Itoa(g)
	}
	return strings.Join(s, ",")
}
