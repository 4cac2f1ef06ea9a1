package main

import (
	"os/user"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestLookupUser(t *testing.T) {
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody here")
	}
	r, err := lookupUser("nobody", 4343)
	if err != nil {
		t.Fatal(err)
	}
	if r.name != "nobody" || strconv.Itoa(r.uid) != nobody.Uid || strconv.Itoa(r.gid) != nobody.Gid ||
		!reflect.DeepEqual(r.groups, []int{r.gid, 4343}) {
		t.Errorf("lookupUser(nobody) = %+v; want nobody's ids and the socket group", r)
	}
	byID, err := lookupUser(nobody.Uid, 0)
	if err != nil || byID.name != "nobody" || byID.uid != r.uid {
		t.Errorf("lookupUser(%s) = %+v, %v; want nobody", nobody.Uid, byID, err)
	}
	if !reflect.DeepEqual(byID.groups, []int{r.gid}) {
		t.Errorf("with --group root the groups are %v; want only the user's own, never 0", byID.groups)
	}
}

func TestLookupUserRefuses(t *testing.T) {
	for name, want := range map[string]string{
		"no-such-user-vknetd": "no such user",
		"root":                "would not give up root",
		"0":                   "would not give up root",
	} {
		if _, err := lookupUser(name, 1); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--user "+name) {
			t.Errorf("lookupUser(%q): %v; want an error naming --user %s and %q", name, err, name, want)
		}
	}
}
