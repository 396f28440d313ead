/*
 * virtio - a small virtio 1.x driver over PCI, for the entropy device (virtio-rng-pci).
 *
 * What an OS does with a virtio-pci device (VIRTIO 1.2 §3.1.1 and §4.1), step by step:
 *   1. find it on PCI bus 0 with configuration mechanism #1 (ports 0xCF8/0xCFC): vendor 1AF4h;
 *   2. size and place its memory BAR, and turn on memory decoding and bus mastering;
 *   3. walk its vendor-specific capabilities to find the common, notify, ISR and device
 *      configuration structures inside that BAR;
 *   4. reset it, ACKNOWLEDGE, DRIVER, accept VIRTIO_F_VERSION_1, FEATURES_OK, set up queue 0
 *      (sizes and the three ring addresses), enable it, DRIVER_OK;
 *   5. route its INTx: the PIIX3's PIRQ route register for the slot's pin, level mode in the
 *      ELCR, unmask the IRQ at the 8259s;
 *   6. offer a device-writable buffer, notify, sleep until the interrupt, read the ISR (which
 *      deasserts INTx), and take the buffer back from the used ring.
 * Then it offers a descriptor chain that loops, and checks that the device refuses it by
 * setting DEVICE_NEEDS_RESET (with a configuration interrupt), and resets it. Everything
 * printed is fixed by construction (no random bytes); QEMU's virtio-rng-pci prints the same
 * (`qemu -nodefaults -device virtio-rng-pci`, the command line of capture-expected.sh).
 *
 * 64-bit only. The BAR goes at 0x3FF00000, inside the 1 GiB this runtime maps (lib/entry64.S)
 * and above the guest's RAM: a BIOS would pick the PCI hole below 4 GiB.
 */
#include "lib.h"

#define BAR_ADDRESS 0x3FF00000ul
#define QUEUE_SIZE 8
#define IRQ 11
#define IRQ_BASE 0x20

enum { ACKNOWLEDGE = 1, DRIVER = 2, DRIVER_OK = 4, FEATURES_OK = 8, NEEDS_RESET = 64 };
enum { DESC_NEXT = 1, DESC_WRITE = 2 };

static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

/* ---- PCI configuration mechanism #1 --------------------------------------------------- */
static u32 cfg_address(int dev, int reg) { return 0x80000000u | (u32)dev << 11 | (reg & 0xfc); }
static u32 cfg_read32(int dev, int reg) { outl(0xcf8, cfg_address(dev, reg)); return inl(0xcfc); }
static u8 cfg_read8(int dev, int reg) { outl(0xcf8, cfg_address(dev, reg)); return inb(0xcfc + (reg & 3)); }
static void cfg_write32(int dev, int reg, u32 v) { outl(0xcf8, cfg_address(dev, reg)); outl(0xcfc, v); }
static void cfg_write8(int dev, int reg, u8 v) { outl(0xcf8, cfg_address(dev, reg)); outb(0xcfc + (reg & 3), v); }

/* ---- the rings (split virtqueue, VIRTIO 1.2 §2.7), identity-mapped ---------------------- */
struct desc { u64 addr; u32 len; u16 flags, next; };
static struct desc descs[QUEUE_SIZE] __attribute__((aligned(16)));
static struct { u16 flags, idx, ring[QUEUE_SIZE], used_event; } avail __attribute__((aligned(2)));
static struct { u16 flags, idx; struct { u32 id, len; } ring[QUEUE_SIZE]; u16 avail_event; } used
    __attribute__((aligned(4)));
static u8 buffer[128];

static volatile u8 *common, *isr, *notify;
static u32 notify_multiplier;
static volatile int irqs, isr_queue, isr_config;
static int failures;

#define COMMON8(o) (*(volatile u8 *)(common + (o)))
#define COMMON16(o) (*(volatile u16 *)(common + (o)))
#define COMMON32(o) (*(volatile u32 *)(common + (o)))

static void fail(const char *what) { kprintf("  <-- FAILED: %s\n", what); failures++; }

static void pic_init(void)
{
    outb(0x20, 0x11); outb(0xa0, 0x11);           /* ICW1: cascade, ICW4 follows */
    outb(0x21, IRQ_BASE); outb(0xa1, IRQ_BASE + 8);
    outb(0x21, 0x04); outb(0xa1, 0x02);           /* ICW3 */
    outb(0x21, 0x01); outb(0xa1, 0x01);           /* ICW4: 8086 mode */
    outb(0x21, 0xff & ~(1 << 2));                 /* only the cascade on the master */
    outb(0xa1, 0xff & ~(1 << (IRQ - 8)));         /* and our IRQ on the slave */
}

int guest_trap(struct trap_frame *f)
{
    if (f->vector != IRQ_BASE + IRQ)
        return 0;
    u8 reasons = *isr;                            /* reading it deasserts INTx */
    irqs++;
    isr_queue += reasons & 1;
    isr_config += (reasons >> 1) & 1;
    outb(0xa0, 0x20);                             /* EOI: slave, then master */
    outb(0x20, 0x20);
    return 1;
}

static void wait_for_irq(int before)
{
    for (int spin = 0; irqs == before && spin < 1000; spin++)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
}

/* Until the device has used the buffer: it may complete later than the notification (QEMU's
 * rng backend answers from its main loop), and an older interrupt may come first. */
static void wait_for_used(u16 old, int queue_irqs)
{
    for (int spin = 0; (*(volatile u16 *)&used.idx == old || isr_queue == queue_irqs) && spin < 1000; spin++)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
}

static int find_virtio(int *type)
{
    for (int dev = 0; dev < 32; dev++) {
        u32 id = cfg_read32(dev, 0);
        if ((id & 0xffff) != 0x1af4)
            continue;
        u16 did = id >> 16;
        *type = did >= 0x1040 ? did - 0x1040 : (int)(cfg_read32(dev, 0x2c) >> 16);
        kprintf("00:%02x.0 virtio vendor 1af4, device type %d (%s)\n", dev, *type,
                *type == 4 ? "entropy" : "other");
        return dev;
    }
    return -1;
}

static void map_bar_and_find_structures(int dev)
{
    cfg_write32(dev, 0x20, 0xffffffff);           /* BAR 4, 64-bit: size it */
    cfg_write32(dev, 0x24, 0xffffffff);
    u32 lo = cfg_read32(dev, 0x20);
    u32 size = ~(lo & ~0xfu) + 1;
    kprintf("BAR 4: %s memory, %u KiB\n", (lo & 6) == 4 ? "64-bit" : "32-bit", size >> 10);
    cfg_write32(dev, 0x20, (u32)BAR_ADDRESS);
    cfg_write32(dev, 0x24, 0);
    cfg_write32(dev, 0x04, cfg_read32(dev, 0x04) | 0x6);   /* memory space, bus master */

    kputs("capabilities:");
    for (int p = cfg_read8(dev, 0x34); p; p = cfg_read8(dev, p + 1)) {
        if (cfg_read8(dev, p) != 0x09)            /* vendor-specific */
            continue;
        int type = cfg_read8(dev, p + 3), bar = cfg_read8(dev, p + 4);
        u32 offset = cfg_read32(dev, p + 8);
        volatile u8 *where = (volatile u8 *)(BAR_ADDRESS + offset);
        static const char *const names[] = {"?", "common", "notify", "isr", "device", "pci-cfg"};
        kprintf(" %s", type <= 5 ? names[type] : "?");
        if (bar != 4)
            continue;
        if (type == 1) common = where;
        if (type == 2) { notify = where; notify_multiplier = cfg_read32(dev, p + 16); }
        if (type == 3) isr = where;
    }
    kputs("\n");
}

static int initialize(void)
{
    COMMON8(0x14) = 0;                            /* reset */
    COMMON8(0x14) = ACKNOWLEDGE;
    COMMON8(0x14) = ACKNOWLEDGE | DRIVER;
    COMMON32(0x00) = 1;                           /* device_feature_select: bits 32-63 */
    int version_1 = COMMON32(0x04) & 1;
    COMMON32(0x08) = 0; COMMON32(0x0c) = 0;       /* no bits 0-31 */
    COMMON32(0x08) = 1; COMMON32(0x0c) = 1;       /* VIRTIO_F_VERSION_1 */
    COMMON8(0x14) = ACKNOWLEDGE | DRIVER | FEATURES_OK;
    int accepted = COMMON8(0x14) & FEATURES_OK;
    COMMON16(0x16) = 0;                           /* queue_select */
    int max = COMMON16(0x18);
    COMMON16(0x18) = QUEUE_SIZE;
    COMMON32(0x20) = (u32)(ulong)descs; COMMON32(0x24) = 0;
    COMMON32(0x28) = (u32)(ulong)&avail; COMMON32(0x2c) = 0;
    COMMON32(0x30) = (u32)(ulong)&used; COMMON32(0x34) = 0;
    COMMON16(0x1c) = 1;                           /* queue_enable */
    COMMON8(0x14) = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;
    avail.idx = used.idx = 0;
    return version_1 && accepted && max >= QUEUE_SIZE;
}

static void offer(u32 len, u16 flags, u16 next)
{
    descs[0] = (struct desc){(u64)(ulong)buffer, len, flags, next};
    avail.ring[avail.idx % QUEUE_SIZE] = 0;
    __asm__ volatile("" ::: "memory");
    avail.idx++;
    __asm__ volatile("" ::: "memory");
    *(volatile u16 *)(notify + COMMON16(0x1e) * notify_multiplier) = 0;
}

static void request(u32 len)
{
    for (u32 i = 0; i < sizeof(buffer); i++)
        buffer[i] = 0;
    int before = isr_queue;
    u16 old = used.idx;
    offer(len, DESC_WRITE, 0);
    wait_for_used(old, before);
    int varied = 0;
    for (u32 i = 1; i < len; i++)
        varied += buffer[i] != buffer[0];
    kprintf("request of %u bytes: used idx %u, id %u, len %u, interrupt %s, bytes %s\n", len, used.idx,
            used.ring[0].id, used.ring[(used.idx - 1) % QUEUE_SIZE].len, isr_queue > before ? "yes" : "no",
            varied > (int)len / 2 ? "varied" : "NOT random");
    if (used.ring[(used.idx - 1) % QUEUE_SIZE].len != len || isr_queue == before || varied <= (int)len / 2)
        fail("request");
}

static void route_interrupt(int dev)
{
    int pin = cfg_read8(dev, 0x3d);               /* 1 = INTA# */
    int pirq = (dev + pin - 2) & 3;               /* the i440FX board's swizzle */
    cfg_write8(1, 0x60 + pirq, IRQ);              /* PIIX3 PIRQRC[pirq] = IRQ */
    cfg_write8(dev, 0x3c, IRQ);                   /* interrupt line: for the record */
    outb(0x4d1, inb(0x4d1) | 1 << (IRQ - 8));     /* ELCR: level-triggered */
    kprintf("INT%c# -> PIRQ%c -> IRQ %d (level)\n", 'A' + pin - 1, 'A' + pirq, IRQ);
}

int guest_main(u32 magic, struct multiboot_info *mbi)
{
    (void)magic; (void)mbi;
    kputs("virtio: a virtio 1.x driver over PCI (entropy device)\n");
    pic_init();
    int type, dev = find_virtio(&type);
    if (dev < 0 || type != 4) {
        kputs("no virtio entropy device (run with -device virtio-rng-pci)\n");
        return 3;
    }
    map_bar_and_find_structures(dev);
    if (!common || !notify || !isr) {
        fail("structures");
        return 3;
    }
    route_interrupt(dev);
    if (!initialize())
        fail("feature negotiation or queue setup");
    kprintf("status 0x%x after DRIVER_OK\n", COMMON8(0x14));
    request(64);
    request(16);

    int before = irqs;
    offer(16, DESC_WRITE | DESC_NEXT, 0);         /* a chain that loops on itself */
    wait_for_irq(before);
    kprintf("a looping chain: status %s, configuration interrupt %s\n",
            COMMON8(0x14) & NEEDS_RESET ? "DEVICE_NEEDS_RESET" : "unchanged", isr_config ? "yes" : "no");
    if (!(COMMON8(0x14) & NEEDS_RESET) || !isr_config)
        fail("the looping chain");
    COMMON8(0x14) = 0;                            /* the driver's answer: a reset */
    kprintf(failures ? "virtio: FAILED, %d checks wrong\n" : "virtio: all checks passed\n", failures);
    return failures ? 3 : 0;
}
