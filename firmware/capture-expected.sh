#!/bin/sh
# capture-expected.sh - record each guest's serial transcript and exit status under
# QEMU TCG, the reference: firmware/expected/NAME.txt (bytes as sent by the guest) and
# firmware/expected/NAME.status (QEMU's exit status; 1 = the guest wrote 0 to port 0xf4).
#
#   firmware/capture-expected.sh              all guests
#   firmware/capture-expected.sh hello64 ...  some of them
#   QEMU_ACCEL=kvm firmware/capture-expected.sh   print a comparison under KVM instead
#                                                 (nothing in expected/ is written)
#   TIMEOUT=20 ...                                seconds per guest (default 60); under
#                                                 KVM a guest that hits an emulation
#                                                 failure never exits by itself
#
# The command line below is the contract: tests/firmware/test_qemu_reference.py uses the
# same one, and an emulator that wants to match these transcripts must give the guests
# the same machine: 128 MiB, COM1, isa-debug-exit at 0xf4, and the multiboot command
# line "<kernel path> answer=42 greeting=hello", and "emu" on COM1's input (stdin).
set -eu
cd "$(dirname "$0")"

QEMU=${QEMU:-qemu-system-x86_64}
ACCEL=${QEMU_ACCEL:-tcg}
APPEND="answer=42 greeting=hello"
ALL="hello32 hello64 exceptions32 exceptions64 rings32 rings64 irqs32 irqs64 idle32 idle64 mmu32 mmu64 modes virtio64 apic64 exits64 memtouch64"
GUESTS=${*:-$ALL}

# The terminal input every guest gets on COM1: irqs reads it through IRQ 4.
INPUT="emu"

# The devices a guest needs, from the one list tests/test_guests.py gives emu too
# (tests/firmware/guest_options.py): for virtio64 an entropy device, a balloon and a network
# card on a UDP socket that sends to itself, on a port that is free now.
devices() {
    python3 ../tests/firmware/guest_options.py "$1"
}

run() {
    # shellcheck disable=SC2046 # devices() gives words
    printf '%s' "$INPUT" | timeout "${TIMEOUT:-60}" "$QEMU" -accel "$ACCEL" -nodefaults -display none \
        -no-reboot -m 128M -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 $(devices "$1") \
        -kernel "build/$1.elf" -append "$APPEND" 2>/dev/null
}

for g in $GUESTS; do
    [ -f "build/$g.elf" ] || { echo "build/$g.elf missing: run make first" >&2; exit 1; }
    start=$(date +%s%N)
    set +e
    if [ "$ACCEL" = tcg ]; then
        run "$g" >"expected/$g.txt"
        status=$?
        echo "$status" >"expected/$g.status"
        # Where QEMU TCG is known to be wrong, keep the architectural line (declared, with the
        # reason, in tests/firmware/qemu_differences.py).
        python3 ../tests/firmware/qemu_differences.py "expected/$g.txt"
    else
        run "$g" >"/tmp/$g.$ACCEL.txt"
        status=$?
    fi
    set -e
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    if [ "$ACCEL" = tcg ]; then
        echo "$g: exit status $status, $(wc -l <"expected/$g.txt") lines, ${ms} ms"
        [ "$status" = 1 ] || echo "  warning: $g did not exit with code 0" >&2
    elif cmp -s "/tmp/$g.$ACCEL.txt" "expected/$g.txt" && [ "$status" = "$(cat "expected/$g.status")" ]; then
        echo "$g: identical under $ACCEL (exit status $status), ${ms} ms"
    else
        echo "$g: DIFFERS under $ACCEL (exit status $status, expected $(cat "expected/$g.status")), ${ms} ms"
        diff "expected/$g.txt" "/tmp/$g.$ACCEL.txt" | sed 's/^/  /' || true
    fi
done
