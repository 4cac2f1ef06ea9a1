#include "textflag.h"

// func prefetchRead(addrs []uintptr)
TEXT ·prefetchRead(SB), NOSPLIT, $0-24
	MOVQ addrs_base+0(FP), SI
	MOVQ addrs_len+8(FP), CX
	TESTQ CX, CX
	JEQ done
loop:
	MOVQ (SI), AX
	PREFETCHT0 (AX)
	ADDQ $8, SI
	DECQ CX
	JNE loop
done:
	RET

// func prefetchExclusive(addrs []uintptr)
TEXT ·prefetchExclusive(SB), NOSPLIT, $0-24
	MOVQ addrs_base+0(FP), SI
	MOVQ addrs_len+8(FP), CX
	TESTQ CX, CX
	JEQ wdone
wloop:
	MOVQ (SI), AX
	// PREFETCHW (AX): 0F 0D /1, which the Go assembler does not name.
	// Only called where CPUID says the CPU has it (hasPrefetchW).
	BYTE $0x0f; BYTE $0x0d; BYTE $0x08
	ADDQ $8, SI
	DECQ CX
	JNE wloop
wdone:
	RET

// func cpuid(leaf uint32) (eax, ecx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-16
	MOVL leaf+0(FP), AX
	XORL CX, CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL CX, ecx+12(FP)
	RET
