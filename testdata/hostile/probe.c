/* A probe for the hostile test suite (tests/hostile): run inside a RUN, it tries one thing a
 * build must not be able to do to the host and prints one line saying whether it could.
 *
 *   probe packet              open an AF_PACKET socket on the build's network
 *   probe open PATH           open PATH read-write (a device node), read one byte
 *   probe mknod PATH MAJ MIN  make a character device node
 *   probe fds                 list open descriptors above stderr, and where they lead
 *   probe peer NAME           connect to the abstract Unix socket NAME and send one byte
 *                             (the listener reads the build's host uid from SO_PEERCRED)
 *   probe syscall NAME        a syscall Docker's seccomp profile refuses: unshare-user,
 *                             keyctl, vsock, alg-highbits (AF_ALG with high bits set)
 *
 * Output: "<what>: ALLOWED" or "<what>: denied (<error>)". Built static by the tests.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sched.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static int report(const char *what, int ok) {
    if (ok)
        printf("%s: ALLOWED\n", what);
    else
        printf("%s: denied (%s)\n", what, strerror(errno));
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "packet") == 0) {
        int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
        return report("packet", fd >= 0);
    }
    if (argc >= 3 && strcmp(argv[1], "peer") == 0) {
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        size_t n = strlen(argv[2]);
        if (n > sizeof a.sun_path - 2)
            n = sizeof a.sun_path - 2;
        memcpy(a.sun_path + 1, argv[2], n); /* sun_path[0] = 0: abstract */
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        int ok = fd >= 0 &&
                 connect(fd, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 1 + n) == 0 &&
                 write(fd, "x", 1) == 1;
        return report("peer", ok);
    }
    if (argc >= 3 && strcmp(argv[1], "open") == 0) {
        int fd = open(argv[2], O_RDWR);
        char c;
        if (fd >= 0 && read(fd, &c, 1) < 0 && errno != EINVAL)
            fd = -1;
        return report("open", fd >= 0);
    }
    if (argc >= 5 && strcmp(argv[1], "mknod") == 0) {
        dev_t d = makedev(atoi(argv[3]), atoi(argv[4]));
        return report("mknod", mknod(argv[2], S_IFCHR | 0666, d) == 0);
    }
    if (argc >= 3 && strcmp(argv[1], "syscall") == 0) {
        const char *n = argv[2];
        long r = -1;
        if (strcmp(n, "unshare-user") == 0)
            r = unshare(CLONE_NEWUSER);
        else if (strcmp(n, "keyctl") == 0)
            r = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0);
        else if (strcmp(n, "vsock") == 0)
            r = socket(40 /* AF_VSOCK */, SOCK_STREAM, 0);
        else if (strcmp(n, "alg-highbits") == 0)
            r = syscall(SYS_socket, 0x100000026L /* AF_ALG, high bits set */, SOCK_SEQPACKET, 0);
        else
            errno = EINVAL;
        return report(n, r >= 0);
    }
    if (argc >= 2 && strcmp(argv[1], "fds") == 0) {
        DIR *dir = opendir("/proc/self/fd");
        struct dirent *e;
        int mine = dir ? dirfd(dir) : -1;
        while (dir && (e = readdir(dir)) != NULL) {
            int n = atoi(e->d_name);
            char path[64], target[4096];
            ssize_t len;
            if (e->d_name[0] == '.' || n <= 2 || n == mine)
                continue;
            snprintf(path, sizeof path, "/proc/self/fd/%d", n);
            len = readlink(path, target, sizeof target - 1);
            target[len < 0 ? 0 : len] = 0;
            printf("fd %d: INHERITED -> %s\n", n, target);
        }
        printf("fds: done\n");
        return 0;
    }
    fprintf(stderr, "usage: probe packet|open PATH|mknod PATH MAJ MIN|fds\n");
    return 2;
}
