// Host build of the reference firmware, for checking it against the Python driver.
//
//   g++ -std=c++17 -O1 -I. -x c++ main.cpp -o physnn_daq_host && ./physnn_daq_host
//
// Opens a pseudo-terminal, prints its slave name on stdout, then runs the
// sketch's setup() and loop() with Serial on the pty master. Exits when stdin
// closes. The analog model: ADC channel k reads
//   (dac0 * (k + 1) + dac1 * (4 - k)) / 5   (12-bit codes in, 12-bit codes out)
// so a test can predict every reply exactly. It also logs each DAC write count
// on stderr at exit.
#include "Arduino.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

HostSerial Serial;
static uint32_t dacValue[2] = {0, 0};
static unsigned long dacWrites = 0;

int HostSerial::available() {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, 1) > 0 && (p.revents & POLLIN) ? 1 : 0;
}

int HostSerial::read() {
  uint8_t b;
  return ::read(fd, &b, 1) == 1 ? b : -1;
}

size_t HostSerial::write(const uint8_t *data, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t k = ::write(fd, data + done, n - done);
    if (k < 0) { usleep(100); continue; }
    done += (size_t)k;
  }
  return n;
}

void analogWriteResolution(int) {}
void analogReadResolution(int) {}
void analogWrite(uint8_t pin, uint32_t value) {
  dacValue[pin == DAC1 ? 1 : 0] = value;
  dacWrites++;
}
int analogRead(uint8_t pin) {
  int k = pin - A0;
  return (int)((dacValue[0] * (k + 1) + dacValue[1] * (4 - k)) / 5);
}
unsigned long millis() {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (unsigned long)(t.tv_sec * 1000UL + t.tv_nsec / 1000000UL);
}
void delayMicroseconds(unsigned int us) { usleep(us); }

#include "../physnn_daq/physnn_daq.ino"

int main() {
  int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) { perror("pty"); return 1; }
  printf("%s\n", ptsname(master));
  fflush(stdout);
  int keep = open(ptsname(master), O_RDWR | O_NOCTTY);  // keep the slave alive between host opens
  struct termios t;
  tcgetattr(keep, &t);
  cfmakeraw(&t);
  tcsetattr(keep, TCSANOW, &t);
  Serial.fd = master;
  setup();
  for (;;) {
    struct pollfd in = {0, POLLIN, 0};
    if (poll(&in, 1, 0) > 0 && (in.revents & (POLLIN | POLLHUP))) {
      char c;
      if (::read(0, &c, 1) <= 0) break;
    }
    loop();
  }
  fprintf(stderr, "dac_writes=%lu\n", dacWrites);
  close(keep);
  close(master);
  return 0;
}
