/*
 * print.c - a very small printf for the serial console.
 *
 * Conversions: %s %c %d %u %x, with an optional '0' flag, a field width, '-' for left
 * alignment, and 'l' for long (register width). Enough for a deterministic transcript,
 * small enough to read in one sitting.
 */
#include "lib.h"

static void put_padded(const char *s, int len, int width, int left, char pad)
{
    if (!left)
        for (; width > len; width--)
            serial_putc(pad);
    for (int i = 0; i < len; i++)
        serial_putc(s[i]);
    if (left)
        for (; width > len; width--)
            serial_putc(' ');
}

void kprintf(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            serial_putc(*fmt);
            continue;
        }
        fmt++;
        int left = 0, width = 0, is_long = 0;
        char pad = ' ';
        if (*fmt == '-') { left = 1; fmt++; }
        if (*fmt == '0') { pad = '0'; fmt++; }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        if (*fmt == 'l') { is_long = 1; fmt++; }

        char buf[24];
        int n = 0;
        unsigned long v;
        switch (*fmt) {
        case 's': {
            const char *s = __builtin_va_arg(ap, const char *);
            int len = 0;
            while (s[len])
                len++;
            put_padded(s, len, width, left, ' ');
            break;
        }
        case 'c':
            buf[0] = (char)__builtin_va_arg(ap, int);
            put_padded(buf, 1, width, left, ' ');
            break;
        case 'd':
        case 'u':
        case 'x': {
            int neg = 0;
            if (is_long)
                v = __builtin_va_arg(ap, unsigned long);
            else
                v = __builtin_va_arg(ap, unsigned int);
            if (*fmt == 'd') {
                long sv = is_long ? (long)v : (long)(int)v;
                if (sv < 0) { neg = 1; v = -(unsigned long)sv; }
            }
            unsigned base = *fmt == 'x' ? 16 : 10;
            char tmp[24];
            do {
                tmp[n++] = "0123456789abcdef"[v % base];
                v /= base;
            } while (v);
            int len = 0;
            if (neg)
                buf[len++] = '-';
            while (n)
                buf[len++] = tmp[--n];
            put_padded(buf, len, width, left, pad);
            break;
        }
        case '%':
            serial_putc('%');
            break;
        default:
            serial_putc('?');
            break;
        }
    }
    __builtin_va_end(ap);
}
