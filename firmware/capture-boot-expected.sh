#!/bin/sh
# capture-boot-expected.sh - record each boot-sector guest's serial transcript and exit
# status under QEMU TCG with SeaBIOS, the reference: firmware/expected/boot-NAME.txt
# (bytes as sent by the guest: "--- screen ---" and the 80x25 text screen) and
# firmware/expected/boot-NAME.status (QEMU's exit status; 1 = the guest wrote 0 to port 0xf4).
#
#   firmware/capture-boot-expected.sh                 all boot guests
#   firmware/capture-boot-expected.sh hello disk ...  some of them (boot-hello also works)
#   QEMU_ACCEL=kvm firmware/capture-boot-expected.sh  print a comparison under KVM instead
#                                                     (nothing in expected/ is written)
#   TIMEOUT=20 ...                                    seconds per guest (default 60)
#
# The command line below is the contract (see boot/README.md):
#
#   qemu-system-x86_64 -accel tcg -nodefaults -display none -no-reboot -m 128M -serial stdio \
#       -device isa-debug-exit,iobase=0xf4,iosize=0x04 -device VGA \
#       -drive file=boot-NAME.img,format=raw,if=ide
#
# -device VGA is needed: with -nodefaults there is no display adapter, so SeaBIOS has no
# VGA BIOS (int 10h does nothing) and nothing answers at B8000h (the screen dump is 25
# rows of NUL bytes). -device VGA (the same as -vga std) brings the stdvga card and
# SeaBIOS's VGA BIOS from its ROM; -display none only means no window shows it.
#
# Each run boots a copy of the image (boot-disk writes to its disk; build/ stays as built).
# boot-keys gets its keys through the QEMU monitor on a unix socket: once "type:" is on the
# screen (read with the monitor's xp command), "sendkey e", "sendkey m", "sendkey u",
# "sendkey ret" (PS/2 keyboard). The monitor is driven by python3.
set -eu
cd "$(dirname "$0")"

QEMU=${QEMU:-qemu-system-x86_64}
ACCEL=${QEMU_ACCEL:-tcg}
TIMEOUT=${TIMEOUT:-60}
ALL="boot-hello boot-disk boot-memory boot-keys boot-modes boot-time"

GUESTS=""
for g in ${*:-$ALL}; do
    case $g in boot-*) GUESTS="$GUESTS $g" ;; *) GUESTS="$GUESTS boot-$g" ;; esac
done

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM

# run IMAGE [extra QEMU arguments]: the guest's serial output on stdout, QEMU's status
run() {
    img=$1
    shift
    timeout "$TIMEOUT" "$QEMU" -accel "$ACCEL" -nodefaults -display none -no-reboot -m 128M \
        -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 -device VGA \
        -drive "file=$img,format=raw,if=ide" "$@" </dev/null 2>/dev/null
}

# The keys for boot-keys, through the monitor socket $1, once the prompt is on screen.
send_keys() {
    python3 - "$1" "$TIMEOUT" <<'EOF'
import re, socket, sys, time

path, timeout = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + timeout
mon = socket.socket(socket.AF_UNIX)
while True:
    try:
        mon.connect(path)
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("boot-keys: no QEMU monitor at " + path)
        time.sleep(0.05)
mon.settimeout(0.2)

def command(line):
    """Send one monitor command, return its output up to the next prompt."""
    mon.sendall(line.encode() + b"\n")
    out = b""
    while not out.endswith(b"(qemu) "):
        try:
            data = mon.recv(4096)
        except socket.timeout:
            continue
        if not data:
            sys.exit("boot-keys: the QEMU monitor closed")
        out += data
    return out.decode(errors="replace")

command("")                                   # the banner and the first prompt
prompt = [ord(c) for c in "type:"]
while True:                                   # row 1 of the text screen: B80A0h
    out = command("xp /10bx 0xb80a0")
    cells = [int(x, 16) for x in re.findall(r"0x([0-9a-f]{2})\b", out.split("\n", 1)[-1])]
    if cells[0::2][:5] == prompt:
        break
    if time.monotonic() > deadline:
        sys.exit("boot-keys: the prompt never appeared")
    time.sleep(0.1)
for key in ("e", "m", "u", "ret"):
    command("sendkey " + key)
EOF
}

for g in $GUESTS; do
    [ -f "build/$g.img" ] || { echo "build/$g.img missing: run make first" >&2; exit 1; }
    cp "build/$g.img" "$TMP/$g.img"
    out="expected/$g.txt"
    [ "$ACCEL" = tcg ] || out="$TMP/$g.$ACCEL.txt"
    start=$(date +%s%N)
    set +e
    if [ "$g" = boot-keys ]; then
        sock="$TMP/monitor.sock"
        run "$TMP/$g.img" -monitor "unix:$sock,server,nowait" >"$out" &
        pid=$!
        send_keys "$sock" || echo "  warning: no keys sent; QEMU ends at the timeout" >&2
        wait "$pid"
        status=$?
    else
        run "$TMP/$g.img" >"$out"
        status=$?
    fi
    set -e
    rm -f "$TMP/$g.img"
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    if [ "$ACCEL" = tcg ]; then
        # expected/ holds what emu's PC must show: where QEMU's PC is a different machine
        # (an i8042, an E820 hole), the difference is declared with its reason in
        # tests/firmware/qemu_differences.py and undone here.
        python3 ../tests/firmware/qemu_differences.py "$out"
        echo "$status" >"expected/$g.status"
        echo "$g: exit status $status, $(grep -c . "$out") non-empty lines, ${ms} ms"
        [ "$status" = 1 ] || echo "  warning: $g did not exit with code 0" >&2
    elif cmp -s "$out" "expected/$g.txt" && [ "$status" = "$(cat "expected/$g.status")" ]; then
        echo "$g: identical under $ACCEL (exit status $status), ${ms} ms"
    else
        echo "$g: DIFFERS under $ACCEL (exit status $status, expected $(cat "expected/$g.status")), ${ms} ms"
        diff "expected/$g.txt" "$out" | sed 's/^/  /' || true
    fi
done
