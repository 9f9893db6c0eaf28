// bench/micro/unix-hop.c: what a fresh unix-socket connection per request costs, against one
// persistent connection, with nothing else in the way: a client process and a server process
// exchange a 1,100-byte "request" and a 200-byte "response" 200,000 times, one at a time.
//
//   gcc -O2 -o /tmp/unix-hop bench/micro/unix-hop.c && /tmp/unix-hop fresh && /tmp/unix-hop persistent
//
// "fresh" is what nginx and httpd do for every request they forward to a daemon group today
// (socket, connect, accept4, close on both ends); "persistent" keeps one connection. Both
// print user+system CPU of the two processes, and wall time, per exchange. The difference is
// the most that keeping connections open between the server and its group could save.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <time.h>

static char path[108];
static char req[1100], resp[200];

static double cpu_of(int who) { struct rusage ru; getrusage(who, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec/1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec/1e6; }

static int connect_to(void) {
  int fd = socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX}; strcpy(a.sun_path, path);
  if (connect(fd, (void*)&a, sizeof a) < 0) { perror("connect"); exit(1); }
  return fd;
}

static void serve(int lfd, int persistent, int n) {
  char buf[2048];
  if (persistent) {
    int c = accept4(lfd, 0, 0, SOCK_CLOEXEC);
    for (int i = 0; i < n; i++) { if (recv(c, buf, sizeof buf, 0) <= 0) break; send(c, resp, sizeof resp, 0); }
    close(c);
  } else {
    for (int i = 0; i < n; i++) {
      int c = accept4(lfd, 0, 0, SOCK_CLOEXEC);
      recv(c, buf, sizeof buf, 0); send(c, resp, sizeof resp, 0); close(c);
    }
  }
  _exit(0);
}

int main(int argc, char **argv) {
  int persistent = argc > 1 && !strcmp(argv[1], "persistent");
  int n = 200000;
  snprintf(path, sizeof path, "/tmp/unix-hop.%d.sock", (int)getpid());
  unlink(path);
  int lfd = socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX}; strcpy(a.sun_path, path);
  if (bind(lfd, (void*)&a, sizeof a) < 0 || listen(lfd, 128) < 0) { perror(path); return 1; }
  memset(req, 'x', sizeof req);
  pid_t pid = fork();
  if (pid == 0) serve(lfd, persistent, n);
  struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
  char buf[512];
  int fd = persistent ? connect_to() : -1;
  for (int i = 0; i < n; i++) {
    if (!persistent) fd = connect_to();
    send(fd, req, sizeof req, 0);
    recv(fd, buf, sizeof buf, 0);
    if (!persistent) close(fd);
  }
  if (persistent) close(fd);
  waitpid(pid, 0, 0);
  unlink(path);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double wall = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec)/1e9;
  double cpu = cpu_of(RUSAGE_SELF) + cpu_of(RUSAGE_CHILDREN);
  printf("%-10s %d exchanges: %.2f us CPU (both ends) and %.2f us wall per exchange\n",
         persistent ? "persistent" : "fresh", n, cpu/n*1e6, wall/n*1e6);
  return 0;
}
