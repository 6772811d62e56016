// Minimal Arduino API for building physnn_daq.ino on a PC (see main.cpp).
// Serial is a pseudo-terminal; the DACs and ADCs are a small linear analog model.
#pragma once
#include <stddef.h>
#include <stdint.h>

#define DAC0 66
#define DAC1 67
#define A0 54
#define A1 55
#define A2 56
#define A3 57

struct HostSerial {
  int fd = -1;
  void begin(unsigned long) {}
  int available();
  int read();
  size_t write(const uint8_t *data, size_t n);
};
extern HostSerial Serial;

void analogWriteResolution(int bits);
void analogReadResolution(int bits);
void analogWrite(uint8_t pin, uint32_t value);
int analogRead(uint8_t pin);
unsigned long millis();
void delayMicroseconds(unsigned int us);
