/*
 * virtio - a small virtio 1.x driver over PCI, for the entropy, block, balloon and network devices.
 *
 * What an OS does with a virtio-pci device (VIRTIO 1.2 §3.1.1 and §4.1), step by step:
 *   1. find it on PCI bus 0 with configuration mechanism #1 (ports 0xCF8/0xCFC): vendor 1AF4h;
 *   2. size and place its memory BAR, and turn on memory decoding and bus mastering;
 *   3. walk its vendor-specific capabilities to find the common, notify, ISR and device
 *      configuration structures inside that BAR;
 *   4. reset it, ACKNOWLEDGE, DRIVER, accept VIRTIO_F_VERSION_1 (and what else it needs),
 *      FEATURES_OK, set up queue 0 (size and the three ring addresses), enable it, DRIVER_OK;
 *   5. route its INTx: the PIIX3's PIRQ route register for the slot's pin, level mode in the
 *      ELCR, unmask the IRQ at the 8259s;
 *   6. offer buffers, notify, sleep until the used ring moves and the interrupt came, read the
 *      ISR (which deasserts INTx).
 * virtio-mmio (§4.2) devices are found from the command line (virtio_mmio.device=, as Linux
 * finds them) and driven through their register window the same way.
 * Entropy device (virtio-rng): two requests, then a descriptor chain that loops, which the
 * device must refuse by setting DEVICE_NEEDS_RESET (with a configuration interrupt); then a
 * reset. Block device (virtio-blk): the capacity, sector 0 read, sector 1 written and flushed;
 * with "wait" on the command line it then sleeps forever, for a test that kills emu there.
 * Memory balloon (virtio-balloon): four pages inflated, `actual` updated, deflated again, and
 * what the pages hold afterwards. Network device (virtio-net): the MAC, receive buffers, one
 * broadcast frame sent, which a -netdev socket that sends to itself brings back.
 * Benchmark mode (bench/virtio.py): "bench=blk-seq", "bench=blk-4k" or "bench=rng-1" on the
 * command line skips the checks above and runs one loop on the first device of its kind:
 *   blk-seq  the whole disk read in order, 128 KiB per request, two requests in flight;
 *   blk-4k   count=N (default 10000) 4 KiB reads in order, wrapping at the end, one at a time;
 *   rng-1    count=N (default 10000) 1-byte entropy requests, one at a time.
 * Each request is notify -> device -> used ring -> interrupt -> the guest woken from hlt, as a
 * driver that sleeps does; the loop does not poll. The guest prints "bench: go" just before the
 * loop and "bench: end" just after it, then a summary line (requests, bytes, interrupts, errors),
 * and exits through isa-debug-exit. The host times the loop between the arrival of those two
 * lines on COM1, so the guest needs no clock (a guest's TSC or PIT is itself emulated, and
 * would have to be calibrated on each accelerator and on QEMU).
 * Everything printed is fixed by construction (no random bytes, no port numbers); each part
 * runs for the devices present. The standard run (capture-expected.sh, devices()) has
 * virtio-rng-pci, virtio-balloon-pci and virtio-net-pci, and QEMU prints the same
 * (`qemu -nodefaults`).
 *
 * 64-bit only. BARs go at 0x3FF00000 up, inside the 1 GiB this runtime maps (lib/entry64.S)
 * and above the guest's RAM: a BIOS would pick the PCI hole below 4 GiB.
 */
#include "lib.h"

#define BAR_BASE 0x3FF00000ul
#define QUEUE_SIZE 8
#define QUEUES 2                                  /* per device: rng and blk use one, balloon and net two */
#define MAX_DEVICES 6
#define IRQ_BASE 0x20

enum { ACKNOWLEDGE = 1, DRIVER = 2, DRIVER_OK = 4, FEATURES_OK = 8, NEEDS_RESET = 64 };
enum { DESC_NEXT = 1, DESC_WRITE = 2 };
enum { TYPE_NET = 1, TYPE_BLK = 2, TYPE_RNG = 4, TYPE_BALLOON = 5 };
enum { BLK_F_FLUSH = 1 << 9, BLK_T_IN = 0, BLK_T_OUT = 1, BLK_T_FLUSH = 4 };

static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

/* ---- PCI configuration mechanism #1 --------------------------------------------------- */
static u32 cfg_address(int dev, int reg) { return 0x80000000u | (u32)dev << 11 | (reg & 0xfc); }
static u32 cfg_read32(int dev, int reg) { outl(0xcf8, cfg_address(dev, reg)); return inl(0xcfc); }
static u8 cfg_read8(int dev, int reg) { outl(0xcf8, cfg_address(dev, reg)); return inb(0xcfc + (reg & 3)); }
static void cfg_write32(int dev, int reg, u32 v) { outl(0xcf8, cfg_address(dev, reg)); outl(0xcfc, v); }
static void cfg_write8(int dev, int reg, u8 v) { outl(0xcf8, cfg_address(dev, reg)); outb(0xcfc + (reg & 3), v); }

/* ---- one device: its structures, its queues (split virtqueues, §2.7), its interrupts ------- */
struct desc { u64 addr; u32 len; u16 flags, next; };
struct virtq {                                    /* the three parts, with §2.7's alignments */
    struct desc descs[QUEUE_SIZE] __attribute__((aligned(16)));
    struct { u16 flags, idx, ring[QUEUE_SIZE], used_event; } avail __attribute__((aligned(2)));
    struct { u16 flags, idx; struct { u32 id, len; } ring[QUEUE_SIZE]; u16 avail_event; } used
        __attribute__((aligned(4)));
    u16 notify_off;                               /* PCI: queue_notify_off, read at setup */
};
struct vdev {
    int slot, type, irq;
    volatile u8 *mmio;                            /* virtio-mmio: the register window (else PCI) */
    volatile u8 *common, *isr, *notify, *config;
    u32 notify_multiplier;
    struct virtq q[QUEUES];
    volatile int isr_queue, isr_config;
};
static struct vdev devices[MAX_DEVICES] __attribute__((aligned(16)));
static int ndevices;
static u8 buffer[1024];
static int failures;
static volatile int ticks;                        /* IRQ 0, while the PIT runs (timer()) */

#define COMMON8(d, o) (*(volatile u8 *)((d)->common + (o)))
#define COMMON16(d, o) (*(volatile u16 *)((d)->common + (o)))
#define COMMON32(d, o) (*(volatile u32 *)((d)->common + (o)))
#define MMIO32(d, o) (*(volatile u32 *)((d)->mmio + (o)))

/* The device status register, wherever the transport keeps it. */
static u8 status_read(struct vdev *d) { return d->mmio ? (u8)MMIO32(d, 0x70) : COMMON8(d, 0x14); }
static void status_write(struct vdev *d, u8 v) { if (d->mmio) MMIO32(d, 0x70) = v; else COMMON8(d, 0x14) = v; }

static void fail(const char *what) { kprintf("  <-- FAILED: %s\n", what); failures++; }

static void pic_init(void)
{
    outb(0x20, 0x11); outb(0xa0, 0x11);           /* ICW1: cascade, ICW4 follows */
    outb(0x21, IRQ_BASE); outb(0xa1, IRQ_BASE + 8);
    outb(0x21, 0x04); outb(0xa1, 0x02);           /* ICW3 */
    outb(0x21, 0x01); outb(0xa1, 0x01);           /* ICW4: 8086 mode */
    outb(0x21, 0xff & ~(1 << 2));                 /* all masked but the cascade */
    outb(0xa1, 0xff);
}

int guest_trap(struct trap_frame *f)
{
    if (f->vector < IRQ_BASE || f->vector >= IRQ_BASE + 16)
        return 0;
    if (f->vector == IRQ_BASE)
        ticks++;
    for (int i = 0; i < ndevices; i++) {          /* a shared level: ask every device on it */
        struct vdev *d = &devices[i];
        if ((ulong)d->irq + IRQ_BASE != f->vector)
            continue;
        u8 reasons;
        if (d->mmio) {
            reasons = (u8)MMIO32(d, 0x60);        /* InterruptStatus, then InterruptACK: the line drops */
            MMIO32(d, 0x64) = reasons;
        } else {
            reasons = *d->isr;                    /* reading it deasserts the device's INTx */
        }
        d->isr_queue += reasons & 1;
        d->isr_config += (reasons >> 1) & 1;
    }
    if (f->vector >= IRQ_BASE + 8)
        outb(0xa0, 0x20);                         /* EOI: slave, then master */
    outb(0x20, 0x20);
    return 1;
}

static void setup_bar_and_structures(struct vdev *d, int index)
{
    int dev = d->slot;
    ulong bar = BAR_BASE + (ulong)index * 0x4000;
    cfg_write32(dev, 0x20, 0xffffffff);           /* BAR 4, 64-bit: size it */
    cfg_write32(dev, 0x24, 0xffffffff);
    u32 lo = cfg_read32(dev, 0x20);
    u32 size = ~(lo & ~0xfu) + 1;
    kprintf("BAR 4: %s memory, %u KiB\n", (lo & 6) == 4 ? "64-bit" : "32-bit", size >> 10);
    cfg_write32(dev, 0x20, (u32)bar);
    cfg_write32(dev, 0x24, 0);
    cfg_write32(dev, 0x04, cfg_read32(dev, 0x04) | 0x6);   /* memory space, bus master */

    kputs("capabilities:");
    for (int p = cfg_read8(dev, 0x34); p; p = cfg_read8(dev, p + 1)) {
        if (cfg_read8(dev, p) != 0x09)            /* vendor-specific */
            continue;
        int type = cfg_read8(dev, p + 3), which_bar = cfg_read8(dev, p + 4);
        volatile u8 *where = (volatile u8 *)(bar + cfg_read32(dev, p + 8));
        static const char *const names[] = {"?", "common", "notify", "isr", "device", "pci-cfg"};
        kprintf(" %s", type <= 5 ? names[type] : "?");
        if (which_bar != 4)
            continue;
        if (type == 1) d->common = where;
        if (type == 2) { d->notify = where; d->notify_multiplier = cfg_read32(dev, p + 16); }
        if (type == 3) d->isr = where;
        if (type == 4) d->config = where;
    }
    kputs("\n");
}

static void route_interrupt(struct vdev *d, int irq)
{
    int pin = cfg_read8(d->slot, 0x3d);           /* 1 = INTA# */
    int pirq = (d->slot + pin - 2) & 3;           /* the i440FX board's swizzle */
    cfg_write8(1, 0x60 + pirq, irq);              /* PIIX3 PIRQRC[pirq] = irq */
    cfg_write8(d->slot, 0x3c, irq);               /* interrupt line: for the record */
    outb(0x4d1, inb(0x4d1) | 1 << (irq - 8));     /* ELCR: level-triggered */
    outb(0xa1, inb(0xa1) & ~(1 << (irq - 8)));    /* unmask at the slave */
    d->irq = irq;
    kprintf("INT%c# -> PIRQ%c -> IRQ %d (level)\n", 'A' + pin - 1, 'A' + pirq, irq);
}

static int initialize_mmio(struct vdev *d, u32 features_low, int queues)
{
    MMIO32(d, 0x70) = 0;                          /* reset */
    MMIO32(d, 0x70) = ACKNOWLEDGE | DRIVER;
    MMIO32(d, 0x14) = 0;                          /* DeviceFeaturesSel: bits 0-31 */
    u32 offered_low = MMIO32(d, 0x10);
    MMIO32(d, 0x14) = 1;                          /* bits 32-63 */
    int version_1 = MMIO32(d, 0x10) & 1;
    MMIO32(d, 0x24) = 0; MMIO32(d, 0x20) = features_low & offered_low;
    MMIO32(d, 0x24) = 1; MMIO32(d, 0x20) = 1;     /* VIRTIO_F_VERSION_1 */
    MMIO32(d, 0x70) = ACKNOWLEDGE | DRIVER | FEATURES_OK;
    int accepted = MMIO32(d, 0x70) & FEATURES_OK, big_enough = 1;
    for (int i = 0; i < queues; i++) {
        struct virtq *q = &d->q[i];
        MMIO32(d, 0x30) = i;                      /* QueueSel */
        big_enough &= MMIO32(d, 0x34) >= QUEUE_SIZE;   /* QueueNumMax: 0 if there is no such queue */
        MMIO32(d, 0x38) = QUEUE_SIZE;
        MMIO32(d, 0x80) = (u32)(ulong)q->descs; MMIO32(d, 0x84) = 0;
        MMIO32(d, 0x90) = (u32)(ulong)&q->avail; MMIO32(d, 0x94) = 0;
        MMIO32(d, 0xa0) = (u32)(ulong)&q->used; MMIO32(d, 0xa4) = 0;
        q->avail.idx = q->used.idx = 0;
        MMIO32(d, 0x44) = 1;                      /* QueueReady */
    }
    MMIO32(d, 0x70) = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;
    return version_1 && accepted && big_enough;
}

/* §3.1.1 over either transport: negotiate VERSION_1 and what of features_low the device
 * offers, set up queues 0..queues-1, DRIVER_OK. Nonzero when all of it worked. */
static int initialize(struct vdev *d, u32 features_low, int queues)
{
    if (d->mmio)
        return initialize_mmio(d, features_low, queues);
    COMMON8(d, 0x14) = 0;                         /* reset */
    COMMON8(d, 0x14) = ACKNOWLEDGE;
    COMMON8(d, 0x14) = ACKNOWLEDGE | DRIVER;
    COMMON32(d, 0x00) = 0;
    u32 offered_low = COMMON32(d, 0x04);
    COMMON32(d, 0x00) = 1;                        /* device_feature_select: bits 32-63 */
    int version_1 = COMMON32(d, 0x04) & 1;
    COMMON32(d, 0x08) = 0; COMMON32(d, 0x0c) = features_low & offered_low;
    COMMON32(d, 0x08) = 1; COMMON32(d, 0x0c) = 1; /* VIRTIO_F_VERSION_1 */
    COMMON8(d, 0x14) = ACKNOWLEDGE | DRIVER | FEATURES_OK;
    int accepted = COMMON8(d, 0x14) & FEATURES_OK, big_enough = 1;
    for (int i = 0; i < queues; i++) {
        struct virtq *q = &d->q[i];
        COMMON16(d, 0x16) = i;                    /* queue_select */
        big_enough &= COMMON16(d, 0x18) >= QUEUE_SIZE;   /* queue_size: 0 if there is no such queue */
        COMMON16(d, 0x18) = QUEUE_SIZE;
        COMMON32(d, 0x20) = (u32)(ulong)q->descs; COMMON32(d, 0x24) = 0;
        COMMON32(d, 0x28) = (u32)(ulong)&q->avail; COMMON32(d, 0x2c) = 0;
        COMMON32(d, 0x30) = (u32)(ulong)&q->used; COMMON32(d, 0x34) = 0;
        q->notify_off = COMMON16(d, 0x1e);        /* where this queue's doorbell is (§4.1.4.4) */
        q->avail.idx = q->used.idx = 0;
        COMMON16(d, 0x1c) = 1;                    /* queue_enable */
    }
    COMMON8(d, 0x14) = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;
    return version_1 && accepted && big_enough;
}

/* Put the chain that starts at descriptor `head` in queue `queue`'s available ring. The
 * device may look at the ring at any time: the entry must be in place before idx moves. */
static void make_available(struct vdev *d, int queue, u16 head)
{
    struct virtq *q = &d->q[queue];
    q->avail.ring[q->avail.idx % QUEUE_SIZE] = head;
    __asm__ volatile("" ::: "memory");
    q->avail.idx++;
    __asm__ volatile("" ::: "memory");
}

/* The available buffer notification (§4.1.5.2, §4.2.3.3): without VIRTIO_F_NOTIFICATION_DATA,
 * the queue's index, written to its doorbell. */
static void notify(struct vdev *d, int queue)
{
    if (d->mmio)
        MMIO32(d, 0x50) = queue;                  /* QueueNotify */
    else
        *(volatile u16 *)(d->notify + d->q[queue].notify_off * d->notify_multiplier) = (u16)queue;
}

/* Offer the chain at descriptor 0 (each descriptor's NEXT set by the caller) and notify. */
static void offer(struct vdev *d, int queue)
{
    make_available(d, queue, 0);
    notify(d, queue);
}

/* Until the device has used a chain and interrupted: it may complete later than the
 * notification (QEMU's rng backend answers from its main loop), and an older interrupt may
 * come first. Returns the length the device reported. */
static u32 wait_for_used(struct vdev *d, int queue, u16 old, int queue_irqs)
{
    struct virtq *q = &d->q[queue];
    for (int spin = 0; (*(volatile u16 *)&q->used.idx == old || d->isr_queue == queue_irqs) && spin < 1000; spin++)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    return q->used.ring[(u16)(q->used.idx - 1) % QUEUE_SIZE].len;
}

static const char *type_name(int type)
{
    return type == TYPE_RNG ? "entropy" : type == TYPE_BLK ? "block" : type == TYPE_NET ? "network"
         : type == TYPE_BALLOON ? "memory balloon" : "other";
}

static void describe(int slot, int type)
{
    kprintf("00:%02x.0 virtio vendor 1af4, device type %d (%s)\n", slot, type, type_name(type));
}

/* The device configuration space (§2.5). The device may change it at any time (a balloon's
 * target, a link's status), and a driver reading several bytes could see half of each value:
 * config_generation changes with every change, so read it, read the field, read it again and
 * start over if it moved (§2.5.1). Accesses are as wide as the field (§4.1.3.1): bytes for
 * the MAC's u8[6], 32 bits for an le32. */
static u8 config_generation(struct vdev *d) { return d->mmio ? (u8)MMIO32(d, 0xfc) : COMMON8(d, 0x15); }

static void config_read_bytes(struct vdev *d, int offset, u8 *out, int n)
{
    u8 generation;
    do {
        generation = config_generation(d);
        for (int i = 0; i < n; i++)
            out[i] = d->config[offset + i];
    } while (config_generation(d) != generation);
}

static u32 config_read32(struct vdev *d, int offset) { return *(volatile u32 *)(d->config + offset); }
static void config_write32(struct vdev *d, int offset, u32 v) { *(volatile u32 *)(d->config + offset) = v; }

/* A timeout for waits that depend on the host (a frame coming back through a socket): the PIT
 * at 100 Hz on IRQ 0 (mode 2, rate generator), counted in `ticks` by guest_trap. */
#define PIT_HZ 1193182
static void timer(int on)
{
    if (on) {
        ticks = 0;
        outb(0x43, 0x34);                         /* channel 0, lobyte/hibyte, mode 2 */
        outb(0x40, (PIT_HZ / 100) & 0xff);
        outb(0x40, (PIT_HZ / 100) >> 8);
    }
    outb(0x21, on ? inb(0x21) & ~1 : inb(0x21) | 1);   /* IRQ 0 at the master */
}

/* ---- the entropy device ---------------------------------------------------------------- */
static void rng_request(struct vdev *d, u32 len)
{
    for (u32 i = 0; i < len; i++)
        buffer[i] = 0;
    struct virtq *q = &d->q[0];
    int before = d->isr_queue;
    u16 old = q->used.idx;
    q->descs[0] = (struct desc){(u64)(ulong)buffer, len, DESC_WRITE, 0};
    offer(d, 0);
    u32 got = wait_for_used(d, 0, old, before);
    int varied = 0;
    for (u32 i = 1; i < len; i++)
        varied += buffer[i] != buffer[0];
    kprintf("request of %u bytes: used idx %u, id %u, len %u, interrupt %s, bytes %s\n", len, q->used.idx,
            q->used.ring[0].id, got, d->isr_queue > before ? "yes" : "no", varied > (int)len / 2 ? "varied" : "NOT random");
    if (got != len || d->isr_queue == before || varied <= (int)len / 2)
        fail("request");
}

static void rng_checks(struct vdev *d)
{
    if (!initialize(d, 0, 1))
        fail("feature negotiation or queue setup");
    kprintf("status 0x%x after DRIVER_OK\n", status_read(d));
    rng_request(d, 64);
    rng_request(d, 16);
    int before = d->isr_config;
    d->q[0].descs[0] = (struct desc){(u64)(ulong)buffer, 16, DESC_WRITE | DESC_NEXT, 0};   /* loops on itself */
    offer(d, 0);
    for (int spin = 0; d->isr_config == before && spin < 1000; spin++)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    kprintf("a looping chain: status %s, configuration interrupt %s\n",
            status_read(d) & NEEDS_RESET ? "DEVICE_NEEDS_RESET" : "unchanged", d->isr_config > before ? "yes" : "no");
    if (!(status_read(d) & NEEDS_RESET) || d->isr_config == before)
        fail("the looping chain");
    status_write(d, 0);                           /* the driver's answer: a reset */
}

/* ---- the block device -------------------------------------------------------------------- */
static struct { u32 type, reserved; u64 sector; } blk_header;
static volatile u8 blk_status;

static int blk_request(struct vdev *d, u32 type, u64 sector, u32 len, int device_writes)
{
    blk_header.type = type;
    blk_header.reserved = 0;
    blk_header.sector = sector;
    blk_status = 0xff;
    struct desc *descs = d->q[0].descs;
    int n = 0;
    descs[n] = (struct desc){(u64)(ulong)&blk_header, sizeof(blk_header), DESC_NEXT, 1}, n++;
    if (len)
        descs[n] = (struct desc){(u64)(ulong)buffer, len, (u16)(DESC_NEXT | (device_writes ? DESC_WRITE : 0)), 2}, n++;
    descs[n] = (struct desc){(u64)(ulong)&blk_status, 1, DESC_WRITE, 0};
    if (n == 1)
        descs[0].next = 1;
    int before = d->isr_queue;
    u16 old = d->q[0].used.idx;
    offer(d, 0);
    wait_for_used(d, 0, old, before);
    return blk_status;
}

static const char written_text[] = "written by the virtio64 guest";

static void blk_checks(struct vdev *d, int wait)
{
    if (!initialize(d, BLK_F_FLUSH, 1))
        fail("feature negotiation or queue setup");
    u64 capacity = *(volatile u32 *)d->config | (u64)*(volatile u32 *)(d->config + 4) << 32;
    kprintf("capacity %lu sectors\n", (ulong)capacity);
    int status = blk_request(d, BLK_T_IN, 0, 512, 1);
    buffer[32] = 0;
    kprintf("sector 0: status %d, \"%s\"\n", status, (const char *)buffer);
    for (u32 i = 0; i < 512; i++)
        buffer[i] = i < sizeof(written_text) ? (u8)written_text[i] : 0;
    status = blk_request(d, BLK_T_OUT, 1, 512, 0);
    int flushed = blk_request(d, BLK_T_FLUSH, 0, 0, 0);
    kprintf("sector 1 written: status %d, flushed: status %d\n", status, flushed);
    if (status || flushed)
        fail("write and flush");
    if (wait) {
        kputs("waiting\n");                       /* a test kills emu now: the data is in the file */
        for (;;)
            __asm__ volatile("sti; hlt" ::: "memory");
    }
}

/* ---- the memory balloon (§5.5) -------------------------------------------------------------
 * The host sets num_pages, the balloon's target size in 4 KiB pages; the driver gives it pages
 * it does not use by sending their page frame numbers (address / 4096, le32 each: §5.5.6, "this
 * is historical, and independent of the guest page size") on the inflateq (queue 0), waits
 * until the device used the buffer, and then writes the balloon's new size to `actual`.
 * Deflating is the same on the deflateq (queue 1). Only VIRTIO_F_VERSION_1 is accepted: not
 * MUST_TELL_HOST (so a deflate is "merely a courtesy"), not STATS_VQ (so there is no queue 2).
 * A device may do what it likes with a page while it is in the balloon (§5.5.6.2): QEMU gives
 * the host memory behind it back (madvise MADV_DONTNEED), and the page reads zero afterwards.
 * The driver must not touch a page between handing it over and the device's acknowledgement
 * (§5.5.6.1), so the pages are looked at only after the deflate. A fifth page, filled the same
 * way and never inflated, shows that what happened was the balloon's doing. */
#define BALLOON_PAGES 4
static u8 balloon_pages[BALLOON_PAGES + 1][4096] __attribute__((aligned(4096)));
static u32 pfns[BALLOON_PAGES];

static u8 pattern(int page, int i) { return (u8)(0x5a + page * 17 + i * 7); }

/* What a page holds: 1 its pattern, 0 zeros, -1 something else. */
static int page_state(int page)
{
    int zeros = 0, same = 0;
    for (int i = 0; i < 4096; i++) {
        zeros += balloon_pages[page][i] == 0;
        same += balloon_pages[page][i] == pattern(page, i);
    }
    return same == 4096 ? 1 : zeros == 4096 ? 0 : -1;
}

/* The PFN array on the inflateq or deflateq, one device-readable descriptor. */
static u32 balloon_send(struct vdev *d, int queue, int *interrupted)
{
    struct virtq *q = &d->q[queue];
    q->descs[0] = (struct desc){(u64)(ulong)pfns, sizeof(pfns), 0, 0};
    int before = d->isr_queue;
    u16 old = q->used.idx;
    offer(d, queue);
    u32 len = wait_for_used(d, queue, old, before);
    *interrupted = d->isr_queue > before;
    if (q->used.idx == old)
        fail("the device did not use the buffer");
    return len;
}

static void balloon_checks(struct vdev *d)
{
    if (!initialize(d, 0, 2))
        fail("feature negotiation or queue setup");
    kprintf("balloon: num_pages %u, actual %u\n", config_read32(d, 0), config_read32(d, 4));
    for (int p = 0; p <= BALLOON_PAGES; p++)
        for (int i = 0; i < 4096; i++)
            balloon_pages[p][i] = pattern(p, i);
    for (int p = 0; p < BALLOON_PAGES; p++)
        pfns[p] = (u32)((ulong)balloon_pages[p] >> 12);

    int interrupted;
    u32 len = balloon_send(d, 0, &interrupted);             /* inflateq */
    config_write32(d, 4, BALLOON_PAGES);
    u32 actual = config_read32(d, 4);
    kprintf("balloon: inflated %d pages (used len %u, interrupt %s), actual %u\n", BALLOON_PAGES, len,
            interrupted ? "yes" : "no", actual);
    if (!interrupted || actual != BALLOON_PAGES)
        fail("inflate");

    len = balloon_send(d, 1, &interrupted);                 /* deflateq */
    config_write32(d, 4, 0);
    actual = config_read32(d, 4);
    kprintf("balloon: deflated %d pages (used len %u, interrupt %s), actual %u\n", BALLOON_PAGES, len,
            interrupted ? "yes" : "no", actual);
    if (!interrupted || actual != 0)
        fail("deflate");

    int zero = 0, kept = 0;
    for (int p = 0; p < BALLOON_PAGES; p++) {
        int state = page_state(p);
        zero += state == 0;
        kept += state == 1;
    }
    kprintf("balloon: after deflate %d of %d pages read zero, %d hold their pattern; the page left out: %s\n",
            zero, BALLOON_PAGES, kept, page_state(BALLOON_PAGES) == 1 ? "pattern" : "CHANGED");
    if (zero + kept != BALLOON_PAGES || page_state(BALLOON_PAGES) != 1)
        fail("page contents");
}

/* ---- the network device (§5.1) ------------------------------------------------------------
 * receiveq1 is queue 0 and transmitq1 queue 1 (§5.1.2: no VIRTIO_NET_F_MQ, no CTRL_VQ). The
 * driver accepts VIRTIO_NET_F_MAC (and VERSION_1) only: "a truly minimal driver" (§5.1.5). With
 * VERSION_1 every packet, both ways, is preceded by struct virtio_net_hdr with num_buffers, 12
 * bytes (§5.1.6), whatever else was negotiated. Without MRG_RXBUF each receive buffer must hold
 * a whole packet: header + 1514 bytes, 1526 (§5.1.6.3.1); without CSUM and GSO the header sent
 * is all zeros: flags 0, gso_type NONE, num_buffers 0 (§5.1.6.2.1). The device writes
 * flags/gso_type on the way in, with DATA_VALID only if GUEST_CSUM was negotiated (§5.1.6.4),
 * and num_buffers, which must be 1 without MRG_RXBUF (§5.1.6.3.2). That one is not printed:
 * QEMU 7.2 leaves it as the driver wrote it (0xeeee here), fixed in later QEMU versions.
 * The frame: Ethernet broadcast from the device's MAC, ethertype 88B5h (IEEE 802 "local
 * experimental"), a text, zero-padded to the 60 bytes of a minimal frame (without the FCS,
 * which the device neither sends nor delivers). */
enum { NET_F_MAC = 1 << 5 };
struct net_hdr { u8 flags, gso_type; u16 hdr_len, gso_size, csum_start, csum_offset, num_buffers; };
#define RX_BUFFERS 4
#define RX_SIZE (sizeof(struct net_hdr) + 1514)
#define FRAME 60
static u8 rx_buffers[RX_BUFFERS][RX_SIZE] __attribute__((aligned(16)));
static struct { struct net_hdr hdr; u8 frame[FRAME]; } __attribute__((packed)) tx;
static const char net_text[] = "a broadcast from the virtio64 guest";
static const char net_answer[] = "an answer from the virtio64 guest";
enum { NET_LOOPBACK, NET_SEND, NET_ECHO };    /* net=send / net=echo on the command line */
static void net_peer(struct vdev *d, int mode);

static void net_checks(struct vdev *d, int mode)
{
    if (!initialize(d, NET_F_MAC, 2))
        fail("feature negotiation or queue setup");
    u8 mac[6];
    config_read_bytes(d, 0, mac, 6);
    kprintf("net: mac %02x:%02x:%02x:%02x:%02x:%02x\n", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);

    /* Receive buffers: device-writable, one descriptor each, all offered with one notify. The
     * bytes are set to 0xee first, so that what the device wrote shows. */
    struct virtq *rxq = &d->q[0], *txq = &d->q[1];
    for (int i = 0; i < RX_BUFFERS; i++) {
        for (ulong j = 0; j < RX_SIZE; j++)
            rx_buffers[i][j] = 0xee;
        rxq->descs[i] = (struct desc){(u64)(ulong)rx_buffers[i], RX_SIZE, DESC_WRITE, 0};
        make_available(d, 0, (u16)i);
    }
    notify(d, 0);
    kprintf("net: %d receive buffers of %u bytes\n", RX_BUFFERS, (unsigned)RX_SIZE);

    /* The frame, header and packet in one device-readable descriptor (§5.1.6.2). */
    for (int i = 0; i < 6; i++) {
        tx.frame[i] = 0xff;
        tx.frame[6 + i] = mac[i];
    }
    tx.frame[12] = 0x88, tx.frame[13] = 0xb5;
    for (int i = 14; i < FRAME; i++)
        tx.frame[i] = i - 14 < (int)sizeof(net_text) ? (u8)net_text[i - 14] : 0;
    txq->descs[0] = (struct desc){(u64)(ulong)&tx, sizeof(tx), 0, 0};
    if (mode != NET_LOOPBACK) {
        net_peer(d, mode);
        return;
    }
    u16 rx_old = rxq->used.idx, tx_old = txq->used.idx;
    int before = d->isr_queue;
    offer(d, 1);

    /* The transmit completion and the frame's return come in either order, from the device and
     * from the host's socket: wait for both, at most 5 s; then 100 ms more, in which nothing
     * else may arrive (a frame sent twice would). */
    timer(1);
    while ((*(volatile u16 *)&txq->used.idx == tx_old || *(volatile u16 *)&rxq->used.idx == rx_old) && ticks < 500)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    int waited = ticks;
    while (ticks < waited + 10)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    timer(0);
    u16 sent = txq->used.idx - tx_old, received = rxq->used.idx - rx_old;
    if (!sent || !received) {
        kprintf("net: %u frames sent, %u received in 5 s\n", sent, received);
        fail("no frame back");
        return;
    }
    u32 tx_len = txq->used.ring[tx_old % QUEUE_SIZE].len;
    u32 id = rxq->used.ring[rx_old % QUEUE_SIZE].id, rx_len = rxq->used.ring[rx_old % QUEUE_SIZE].len;
    kprintf("net: transmit used len %u; received into buffer %u, used len %u; interrupt %s\n", tx_len, id, rx_len,
            d->isr_queue > before ? "yes" : "no");
    if (id >= RX_BUFFERS || rx_len < sizeof(struct net_hdr)) {
        fail("the used receive buffer");
        return;
    }
    const struct net_hdr *hdr = (const struct net_hdr *)rx_buffers[id];
    const u8 *frame = rx_buffers[id] + sizeof(struct net_hdr);
    u32 length = rx_len - sizeof(struct net_hdr);
    /* The same frame, whoever sent it: the source MAC is the sender's (this guest's own when
     * the backend loops back; another guest's across a bridge or a socket pair). */
    int same = length == FRAME;
    for (int i = 0; same && i < FRAME; i++)
        same = (i >= 6 && i < 12) || frame[i] == tx.frame[i];
    kprintf("net: receive header flags %u, gso_type %u\n", hdr->flags, hdr->gso_type);
    kprintf("net: sent %u bytes, received %u bytes, frame %s\n", FRAME, length, same ? "matches" : "DIFFERS");
    kprintf("net: %u frame(s) sent, %u received\n", sent, received);
    if (same)
        kprintf("net: from %02x:%02x:%02x:%02x:%02x:%02x, type 0x%02x%02x: \"%s\"\n", frame[6], frame[7], frame[8],
                frame[9], frame[10], frame[11], frame[12], frame[13], (const char *)frame + 14);
    if (tx_len != 0 || !same || hdr->flags || hdr->gso_type || sent != 1 || received != 1 || d->isr_queue == before)
        fail("the frame");
}

/* Two guests on one wire: a bridge of two taps, or two sockets naming each other. The sender
 * repeats its broadcast every 100 ms until an answer comes, for up to 10 s: the other guest's
 * emu may not be up yet, and a frame sent with no one on the wire is lost, as on a real one.
 * The echo waits up to 10 s for a frame and answers it once with its own. A wire carries
 * other frames too (a host's bridge or stack may speak first): frames that are not virtio64's
 * (ethertype 88B5h, 60 bytes) are skipped and their buffer offered again. Each side prints whom
 * it heard (the frame's source MAC) and what; how many frames it took is not printed. */
static void net_peer(struct vdev *d, int mode)
{
    struct virtq *rxq = &d->q[0], *txq = &d->q[1];
    u16 rx_old = rxq->used.idx;
    const u8 *frame = 0;
    timer(1);
    for (int last = -10; !frame && ticks < 1000;) {
        if (mode == NET_SEND && ticks - last >= 10 && *(volatile u16 *)&txq->used.idx == txq->avail.idx) {
            offer(d, 1);
            last = ticks;
        }
        __asm__ volatile("sti; hlt; cli" ::: "memory");
        while (!frame && *(volatile u16 *)&rxq->used.idx != rx_old) {
            u32 id = rxq->used.ring[rx_old % QUEUE_SIZE].id % RX_BUFFERS, len = rxq->used.ring[rx_old % QUEUE_SIZE].len;
            const u8 *f = rx_buffers[id] + sizeof(struct net_hdr);
            rx_old++;
            if (len == sizeof(struct net_hdr) + FRAME && f[12] == 0x88 && f[13] == 0xb5 && f[FRAME - 1] == 0)
                frame = f;
            else {                                /* someone else's: the buffer goes back */
                make_available(d, 0, (u16)id);
                notify(d, 0);
            }
        }
    }
    if (!frame) {
        timer(0);
        kprintf("net: %s: nothing heard in 10 s\n", mode == NET_SEND ? "send" : "echo");
        fail("no frame from the other guest");
        return;
    }
    kprintf("net: %s: heard %02x:%02x:%02x:%02x:%02x:%02x: \"%s\"\n", mode == NET_SEND ? "send" : "echo", frame[6],
            frame[7], frame[8], frame[9], frame[10], frame[11], (const char *)frame + 14);
    if (mode == NET_ECHO) {
        for (int i = 14; i < FRAME; i++)
            tx.frame[i] = i - 14 < (int)sizeof(net_answer) ? (u8)net_answer[i - 14] : 0;
        u16 tx_old = txq->used.idx;
        offer(d, 1);
        for (int start = ticks; *(volatile u16 *)&txq->used.idx == tx_old && ticks < start + 100;)
            __asm__ volatile("sti; hlt; cli" ::: "memory");
        kprintf("net: echo: answered (transmit %s)\n", txq->used.idx != tx_old ? "used" : "NOT used in 1 s");
        if (txq->used.idx == tx_old)
            fail("the answer");
    }
    timer(0);
}

/* virtio-mmio devices are not discoverable: the command line names them, as Linux's
 * virtio_mmio.device=<size>@<base>:<irq> (drivers/virtio/virtio_mmio.c). Their windows lie
 * near 4 GiB, outside the 1 GiB the runtime maps: map the top GiB with 2 MiB pages (PCD). */
extern u64 pdpt[512];
static u64 top_dir[512] __attribute__((aligned(4096)));

static void map_top_gib(void)
{
    for (int i = 0; i < 512; i++)
        top_dir[i] = (0xC0000000ul + (ulong)i * 0x200000ul) | 0x93;   /* P | RW | PCD | PS */
    pdpt[3] = (ulong)top_dir | 0x3;
    write_cr3(read_cr3());
}

static ulong parse_number(const char **p)
{
    ulong v = 0;
    int base = 10;
    if ((*p)[0] == '0' && (*p)[1] == 'x')
        base = 16, *p += 2;
    for (;; (*p)++) {
        char c = **p;
        int digit = c >= '0' && c <= '9' ? c - '0' : base == 16 && c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (digit < 0)
            return v;
        v = v * base + digit;
    }
}

static void find_mmio_devices(const char *cmdline)
{
    static const char key[] = "virtio_mmio.device=";
    for (const char *s = cmdline; *s && ndevices < MAX_DEVICES; s++) {
        int i = 0;
        while (key[i] && s[i] == key[i])
            i++;
        if (key[i])
            continue;
        const char *p = s + i;
        parse_number(&p);                         /* the window's size */
        if (*p++ != '@')
            continue;
        ulong base = parse_number(&p);
        if (*p++ != ':')
            continue;
        int irq = (int)parse_number(&p);
        if (!pdpt[3])
            map_top_gib();
        struct vdev *d = &devices[ndevices];
        d->mmio = (volatile u8 *)base;
        d->config = d->mmio + 0x100;              /* the device's configuration space (§4.2.2) */
        d->type = (int)MMIO32(d, 0x08);
        kprintf("mmio 0x%lx: magic %s, version %u, device type %d (%s), IRQ %d\n", base,
                MMIO32(d, 0x00) == 0x74726976 ? "ok" : "WRONG", MMIO32(d, 0x04), d->type,
                type_name(d->type), irq);
        d->irq = irq;
        outb(irq < 8 ? 0x21 : 0xa1, inb(irq < 8 ? 0x21 : 0xa1) & ~(1 << (irq & 7)));   /* edge: the default */
        ndevices++;
    }
}

static int has_word(const char *s, const char *word)
{
    for (; *s; s++) {
        int i = 0;
        while (word[i] && s[i] == word[i])
            i++;
        if (!word[i] && (s[i] == 0 || s[i] == ' '))
            return 1;
    }
    return 0;
}

/* ---- benchmark loops (see the top of this file) --------------------------------------------
 * Request slot s uses descriptors 3s..3s+2 (header, data, status): with QUEUE_SIZE 8, two slots. */
#define BENCH_CHUNK (128 * 1024)
#define BENCH_SLOTS 2
static u8 bench_data[BENCH_SLOTS][BENCH_CHUNK] __attribute__((aligned(4096)));
static struct { u32 type, reserved; u64 sector; } bench_headers[BENCH_SLOTS];
static volatile u8 bench_status[BENCH_SLOTS];
static struct { ulong requests, bytes, errors; int irqs_seen; } bench;

/* What follows `key` ("bench=", "count=") on the command line, or 0 if it is not there. */
static const char *after_key(const char *s, const char *key)
{
    for (; *s; s++) {
        int i = 0;
        while (key[i] && s[i] == key[i])
            i++;
        if (!key[i])
            return s + i;
    }
    return 0;
}

static ulong word_number(const char *s, const char *key, ulong otherwise)
{
    const char *p = after_key(s, key);
    return p ? parse_number(&p) : otherwise;
}

/* Offer request slot `slot`: a read of `len` bytes at `sector` (blk), or `len` random bytes (rng). */
static void bench_submit(struct vdev *d, int slot, u64 sector, u32 len)
{
    u16 first = (u16)(3 * slot);
    struct desc *descs = d->q[0].descs + first;
    if (d->type == TYPE_RNG) {
        descs[0] = (struct desc){(u64)(ulong)bench_data[slot], len, DESC_WRITE, 0};
    } else {
        bench_headers[slot].type = BLK_T_IN;
        bench_headers[slot].sector = sector;
        bench_status[slot] = 0xff;
        descs[0] = (struct desc){(u64)(ulong)&bench_headers[slot], sizeof(bench_headers[slot]), DESC_NEXT, first + 1};
        descs[1] = (struct desc){(u64)(ulong)bench_data[slot], len, DESC_NEXT | DESC_WRITE, first + 2};
        descs[2] = (struct desc){(u64)(ulong)&bench_status[slot], 1, DESC_WRITE, 0};
    }
    make_available(d, 0, first);
    notify(d, 0);
}

/* `total` requests of `len` bytes, `slots` in flight. Sleeps until the used ring moved and an
 * interrupt came since the last batch, then takes the completions that were there when it woke
 * (not the ones that arrive while it resubmits: those have an interrupt of their own to wait
 * for). With one slot, every request costs one notification and one interrupt. */
static void bench_loop(struct vdev *d, ulong total, u32 len, int slots, u64 capacity)
{
    struct virtq *q = &d->q[0];
    u64 per = len / 512, span = d->type == TYPE_BLK ? capacity / per * per : 1;
    ulong submitted = 0;
    u16 seen = q->used.idx;
    bench.irqs_seen = d->isr_queue;
    for (int s = 0; s < slots && submitted < total; s++, submitted++)
        bench_submit(d, s, submitted * per % span, len);
    while (bench.requests < total) {
        while (*(volatile u16 *)&q->used.idx == seen || d->isr_queue == bench.irqs_seen)
            __asm__ volatile("sti; hlt; cli" ::: "memory");
        bench.irqs_seen = d->isr_queue;
        for (u16 used = *(volatile u16 *)&q->used.idx; seen != used; seen++) {   /* what that interrupt covers */
            u32 id = q->used.ring[seen % QUEUE_SIZE].id, got = q->used.ring[seen % QUEUE_SIZE].len;
            int slot = (int)(id / 3);
            bench.requests++;
            bench.bytes += d->type == TYPE_RNG ? got : got - 1;
            bench.errors += d->type == TYPE_RNG ? got != len : bench_status[slot] != 0 || got != len + 1;
            if (submitted < total)
                bench_submit(d, slot, submitted++ * per % span, len);
        }
    }
}

static int run_bench(const char *cmdline)
{
    const char *name = has_word(cmdline, "bench=blk-seq") ? "blk-seq" : has_word(cmdline, "bench=blk-4k") ? "blk-4k"
                     : has_word(cmdline, "bench=rng-1") ? "rng-1" : 0;
    if (!name) {
        kputs("bench: unknown loop (bench=blk-seq, bench=blk-4k or bench=rng-1)\n");
        return 3;
    }
    int type = name[0] == 'r' ? TYPE_RNG : TYPE_BLK;
    struct vdev *d = 0;
    for (int i = 0; i < ndevices && !d; i++)
        d = devices[i].type == type ? &devices[i] : 0;
    if (!d || !initialize(d, 0, 1)) {
        kprintf("bench %s: no usable %s device\n", name, type_name(type));
        return 3;
    }
    u64 capacity = type == TYPE_BLK ? *(volatile u32 *)d->config | (u64)*(volatile u32 *)(d->config + 4) << 32 : 0;
    u32 len = name[4] == 's' ? BENCH_CHUNK : type == TYPE_BLK ? 4096 : 1;
    ulong total = name[4] == 's' ? capacity / (BENCH_CHUNK / 512) : word_number(cmdline, "count=", 10000);
    if (type == TYPE_BLK && capacity < len / 512) {
        kprintf("bench %s: the disk is smaller than one request\n", name);
        return 3;
    }
    kputs("bench: go\n");
    bench_loop(d, total, len, name[4] == 's' ? BENCH_SLOTS : 1, capacity);
    kputs("bench: end\n");
    kprintf("bench %s: %lu requests of %u bytes, %lu bytes, %d interrupts, %lu errors\n", name, bench.requests, len,
            bench.bytes, d->isr_queue, bench.errors);
    return bench.errors ? 3 : 0;
}

int guest_main(u32 magic, struct multiboot_info *mbi)
{
    (void)magic;
    const char *cmdline = (mbi->flags & MB_INFO_CMDLINE) ? (const char *)(ulong)mbi->cmdline : "";
    int wait = has_word(cmdline, "wait");
    int net_mode = has_word(cmdline, "net=send") ? NET_SEND : has_word(cmdline, "net=echo") ? NET_ECHO : NET_LOOPBACK;
    kputs("virtio: a virtio 1.x driver over PCI\n");
    pic_init();
    for (int slot = 0; slot < 32 && ndevices < 4; slot++) {   /* PCI devices first */
        u32 id = cfg_read32(slot, 0);
        if ((id & 0xffff) != 0x1af4)
            continue;
        u16 did = id >> 16;
        struct vdev *d = &devices[ndevices];
        d->slot = slot;
        d->type = did >= 0x1040 ? did - 0x1040 : (int)(cfg_read32(slot, 0x2c) >> 16);
        describe(slot, d->type);
        setup_bar_and_structures(d, ndevices);
        if (!d->common || !d->notify || !d->isr) {
            fail("structures");
            return 3;
        }
        route_interrupt(d, ndevices % 2 ? 10 : 11);   /* two IRQs, shared by every other device */
        ndevices++;
    }
    if (mbi->flags & MB_INFO_CMDLINE)
        find_mmio_devices((const char *)(ulong)mbi->cmdline);
    if (!ndevices) {
        kputs("no virtio device (run with -device virtio-rng-pci, virtio-balloon-pci, virtio-net-pci"
              " or -drive file=IMG,if=virtio)\n");
        return 3;
    }
    if (after_key(cmdline, "bench="))
        return run_bench(cmdline);
    for (int i = 0; i < ndevices; i++) {
        if (devices[i].type == TYPE_RNG)
            rng_checks(&devices[i]);
        else if (devices[i].type == TYPE_BLK)
            blk_checks(&devices[i], wait);
        else if (devices[i].type == TYPE_BALLOON)
            balloon_checks(&devices[i]);
        else if (devices[i].type == TYPE_NET)
            net_checks(&devices[i], net_mode);
    }
    kprintf(failures ? "virtio: FAILED, %d checks wrong\n" : "virtio: all checks passed\n", failures);
    return failures ? 3 : 0;
}
