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

// func prefetchWrite(addrs []uintptr)
TEXT ·prefetchWrite(SB), NOSPLIT, $0-24
	MOVQ addrs_base+0(FP), SI
	MOVQ addrs_len+8(FP), CX
	TESTQ CX, CX
	JEQ wdone
wloop:
	MOVQ (SI), AX
	// PREFETCHW (AX): 0F 0D /1, which the Go assembler does not name.
	// A CPU without it (Intel before Broadwell) runs it as a NOP.
	BYTE $0x0f; BYTE $0x0d; BYTE $0x08
	ADDQ $8, SI
	DECQ CX
	JNE wloop
wdone:
	RET
