package main

import "github.com/vknetd/vknetd/secure"

func securePolicyText() string { return secure.PolicySummary }
