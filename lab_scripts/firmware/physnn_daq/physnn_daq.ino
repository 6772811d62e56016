// physnn serial DAQ firmware, protocol version 1 (shared/protocols/serial-daq.md).
//
// Reference implementation for an Arduino-class board: DACs drive the analog
// system, ADCs read it, and the host (physnn.devices.serial_daq.SerialDAQSystem)
// sends whole batches in one RUN_BATCH frame. Not built in CI; the pty fake
// (physnn/devices/sim/fake_firmware.py) implements the same protocol for tests.
//
// Frame (both directions):
//   SOF 0xA5 | CMD u8 | SEQ u8 | LEN u16 LE (<= 8192) | PAYLOAD | CRC u16 LE
//   CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over CMD, SEQ, LEN, PAYLOAD.
//   Replies carry CMD | 0x80 and echo SEQ; errors carry CMD 0xFF with payload
//   u8 code, u8 request_cmd, UTF-8 message.
//
// Safety rules this file keeps:
//   * no DAC is written before SET_LIMITS has been received since power-up;
//   * a RUN_BATCH is checked completely against the limits BEFORE the first
//     DAC write; one bad code refuses the whole batch (OUT_OF_LIMITS);
//   * SAFE (and power-up) puts every DAC at SAFE_CODE and disables outputs.
//
// Edit the "board configuration" section for your board (see README.md).

#include <Arduino.h>
#include <stdio.h>
#include <string.h>

// ============================ board configuration ============================
#define N_IN 2                 // DAC channels (drive inputs)
#define N_OUT 4                // ADC channels (measured outputs)
#define DAC_BITS 12            // DAC resolution in bits (1..16)
#define ADC_BITS 12            // ADC resolution in bits (1..16)
#define MAX_BATCH 64           // rows per RUN_BATCH this board buffers (RAM!)
#define SETTLE_US 200          // wait between setting the DACs and reading the ADCs
#define SAFE_CODE 0            // DAC code of the safe state (0 V on a unipolar DAC)
#define BAUD 115200            // ignored by native-USB boards, used by UART bridges
#define FRAME_TIMEOUT_MS 100   // a frame with a gap longer than this is abandoned

static const char MODEL[] = "arduino-due-daq";
static const char SERIAL_NO[] = "DUE-0001";     // give every board its own
static const char FIRMWARE[] = "physnn_daq 1.0";

// Arduino Due: two 12-bit DACs (DAC0, DAC1), 12-bit ADCs on A0..A11.
static const uint8_t DAC_PINS[N_IN] = {DAC0, DAC1};
static const uint8_t ADC_PINS[N_OUT] = {A0, A1, A2, A3};

static void boardSetup() {
  analogWriteResolution(DAC_BITS);
  analogReadResolution(ADC_BITS);
}

static void dacWrite(uint8_t ch, uint16_t code) {
  analogWrite(DAC_PINS[ch], code);  // replace with an SPI/I2C DAC driver if external
}

static uint16_t adcRead(uint8_t ch) {
  return (uint16_t)analogRead(ADC_PINS[ch]);
}

static void outputsEnable(bool on) {
  (void)on;  // e.g. switch an output relay or a driver's enable pin here
}
// ========================== end of board configuration ========================

#define PROTOCOL_VERSION 1
#define SOF 0xA5
#define MAX_PAYLOAD 8192
#define CMD_IDENT 0x01
#define CMD_SET_LIMITS 0x02
#define CMD_RUN_BATCH 0x03
#define CMD_SAFE 0x04
#define CMD_PING 0x05
#define CMD_ERROR 0xFF
#define REPLY_BIT 0x80

#define ERR_BAD_CRC 1
#define ERR_BAD_LENGTH 2
#define ERR_UNKNOWN_COMMAND 3
#define ERR_OUT_OF_LIMITS 4
#define ERR_BATCH_TOO_LARGE 5
#define ERR_BUSY 6
#define ERR_HARDWARE_FAULT 7

#define DAC_MAX ((uint16_t)((1UL << DAC_BITS) - 1))
#define RX_CAP (2 + MAX_BATCH * N_IN * 2)
#define TX_DATA (2 + MAX_BATCH * N_OUT * 2)
#define TX_CAP (TX_DATA > 320 ? TX_DATA : 320)  // room for the IDENT JSON and messages

#if RX_CAP > MAX_PAYLOAD || TX_DATA > MAX_PAYLOAD
#error "MAX_BATCH * channels * 2 + 2 must fit the protocol's 8192-byte payload: lower MAX_BATCH"
#endif
#if DAC_BITS < 1 || DAC_BITS > 16 || ADC_BITS < 1 || ADC_BITS > 16
#error "DAC_BITS and ADC_BITS must be 1..16"
#endif

static uint8_t rx[RX_CAP];
static uint8_t tx[TX_CAP];

static bool limitsSet = false;
static uint16_t limitLo = 0, limitHi = 0;

// ----------------------------------------------------------------- CRC-16
static uint16_t crcUpdate(uint16_t crc, uint8_t b) {
  crc ^= (uint16_t)b << 8;
  for (uint8_t i = 0; i < 8; i++) {
    crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
  }
  return crc;
}

// ------------------------------------------------------------ frame output
static void sendFrame(uint8_t cmd, uint8_t seq, const uint8_t *payload, uint16_t len) {
  uint8_t head[5] = {SOF, cmd, seq, (uint8_t)(len & 0xFF), (uint8_t)(len >> 8)};
  uint16_t crc = 0xFFFF;
  for (uint8_t i = 1; i < 5; i++) crc = crcUpdate(crc, head[i]);
  for (uint16_t i = 0; i < len; i++) crc = crcUpdate(crc, payload[i]);
  Serial.write(head, 5);
  if (len) Serial.write(payload, len);
  uint8_t tail[2] = {(uint8_t)(crc & 0xFF), (uint8_t)(crc >> 8)};
  Serial.write(tail, 2);
}

static void sendError(uint8_t seq, uint8_t code, uint8_t requestCmd, const char *msg) {
  size_t n = strlen(msg);
  if (n > TX_CAP - 2) n = TX_CAP - 2;
  tx[0] = code;
  tx[1] = requestCmd;
  memcpy(tx + 2, msg, n);
  sendFrame(CMD_ERROR, seq, tx, (uint16_t)(2 + n));
}

static inline uint16_t getU16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }
static inline void putU16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v & 0xFF); p[1] = (uint8_t)(v >> 8); }

// ---------------------------------------------------------------- commands
static void goSafe() {
  for (uint8_t c = 0; c < N_IN; c++) dacWrite(c, SAFE_CODE);
  outputsEnable(false);
}

static void handleIdent(uint8_t seq, uint16_t len) {
  if (len != 0) { sendError(seq, ERR_BAD_LENGTH, CMD_IDENT, "IDENT takes no payload"); return; }
  int n = snprintf((char *)tx, TX_CAP,
                   "{\"protocol\":%d,\"model\":\"%s\",\"serial\":\"%s\",\"firmware\":\"%s\","
                   "\"n_in\":%d,\"n_out\":%d,\"dac_bits\":%d,\"adc_bits\":%d,\"max_batch\":%d,\"settle_us\":%d}",
                   PROTOCOL_VERSION, MODEL, SERIAL_NO, FIRMWARE, N_IN, N_OUT, DAC_BITS, ADC_BITS, MAX_BATCH,
                   SETTLE_US);
  if (n < 0 || n >= (int)TX_CAP) { sendError(seq, ERR_HARDWARE_FAULT, CMD_IDENT, "IDENT too long"); return; }
  sendFrame(CMD_IDENT | REPLY_BIT, seq, tx, (uint16_t)n);
}

static void handleSetLimits(uint8_t seq, uint16_t len) {
  if (len != 4) { sendError(seq, ERR_BAD_LENGTH, CMD_SET_LIMITS, "SET_LIMITS needs 4 bytes"); return; }
  uint16_t lo = getU16(rx), hi = getU16(rx + 2);
  if (lo > hi || hi > DAC_MAX) {
    char msg[64];
    snprintf(msg, sizeof msg, "limits %u..%u invalid for a %d-bit DAC", lo, hi, DAC_BITS);
    sendError(seq, ERR_OUT_OF_LIMITS, CMD_SET_LIMITS, msg);
    return;
  }
  limitLo = lo;
  limitHi = hi;
  limitsSet = true;
  sendFrame(CMD_SET_LIMITS | REPLY_BIT, seq, tx, 0);
}

static void handleRunBatch(uint8_t seq, uint16_t len) {
  if (len < 2) { sendError(seq, ERR_BAD_LENGTH, CMD_RUN_BATCH, "payload shorter than u16 n"); return; }
  uint16_t n = getU16(rx);
  if (n == 0) { sendError(seq, ERR_BAD_LENGTH, CMD_RUN_BATCH, "n=0"); return; }
  if (n > MAX_BATCH) { sendError(seq, ERR_BATCH_TOO_LARGE, CMD_RUN_BATCH, "n > max_batch"); return; }
  if (len != 2 + (uint32_t)n * N_IN * 2) { sendError(seq, ERR_BAD_LENGTH, CMD_RUN_BATCH, "LEN != 2 + n*n_in*2"); return; }
  if (!limitsSet) { sendError(seq, ERR_OUT_OF_LIMITS, CMD_RUN_BATCH, "no SET_LIMITS since power-up"); return; }
  // Check every code before touching any DAC: one bad code refuses the whole batch.
  const uint8_t *codes = rx + 2;
  for (uint32_t i = 0; i < (uint32_t)n * N_IN; i++) {
    uint16_t c = getU16(codes + 2 * i);
    if (c < limitLo || c > limitHi) {
      char msg[80];
      snprintf(msg, sizeof msg, "code %u at row %lu, channel %lu outside %u..%u", c,
               (unsigned long)(i / N_IN), (unsigned long)(i % N_IN), limitLo, limitHi);
      sendError(seq, ERR_OUT_OF_LIMITS, CMD_RUN_BATCH, msg);
      return;
    }
  }
  outputsEnable(true);
  putU16(tx, n);
  uint8_t *out = tx + 2;
  for (uint16_t r = 0; r < n; r++) {
    for (uint8_t c = 0; c < N_IN; c++) dacWrite(c, getU16(codes + 2 * ((uint32_t)r * N_IN + c)));
    if (SETTLE_US) delayMicroseconds(SETTLE_US);
    for (uint8_t c = 0; c < N_OUT; c++) putU16(out + 2 * ((uint32_t)r * N_OUT + c), adcRead(c));
  }
  sendFrame(CMD_RUN_BATCH | REPLY_BIT, seq, tx, (uint16_t)(2 + (uint32_t)n * N_OUT * 2));
}

static void handleSafe(uint8_t seq, uint16_t len) {
  if (len != 0) { sendError(seq, ERR_BAD_LENGTH, CMD_SAFE, "SAFE takes no payload"); return; }
  goSafe();
  sendFrame(CMD_SAFE | REPLY_BIT, seq, tx, 0);
}

static void dispatch(uint8_t cmd, uint8_t seq, uint16_t len) {
  switch (cmd) {
    case CMD_IDENT: handleIdent(seq, len); break;
    case CMD_SET_LIMITS: handleSetLimits(seq, len); break;
    case CMD_RUN_BATCH: handleRunBatch(seq, len); break;
    case CMD_SAFE: handleSafe(seq, len); break;
    case CMD_PING: sendFrame(CMD_PING | REPLY_BIT, seq, rx, len); break;
    default: sendError(seq, ERR_UNKNOWN_COMMAND, cmd, "unknown command"); break;
  }
}

// ------------------------------------------------------------ frame input
enum RxState { WAIT_SOF, HEADER, PAYLOAD, CRC_LO, CRC_HI };
static RxState state = WAIT_SOF;
static uint8_t header[4];      // CMD, SEQ, LEN lo, LEN hi
static uint8_t headerPos = 0;
static uint16_t frameLen = 0, payloadPos = 0, crcCalc = 0xFFFF, crcRecv = 0;
static bool tooLong = false;   // LEN fits the protocol but not this board's buffer
static unsigned long lastByteMs = 0;

static void onByte(uint8_t b) {
  switch (state) {
    case WAIT_SOF:
      if (b == SOF) { state = HEADER; headerPos = 0; crcCalc = 0xFFFF; }
      break;  // any other byte is skipped (resynchronisation)
    case HEADER:
      header[headerPos++] = b;
      crcCalc = crcUpdate(crcCalc, b);
      if (headerPos == 4) {
        frameLen = (uint16_t)(header[2] | ((uint16_t)header[3] << 8));
        if (frameLen > MAX_PAYLOAD) { state = WAIT_SOF; break; }  // not a frame: resync
        tooLong = frameLen > RX_CAP;
        payloadPos = 0;
        state = frameLen ? PAYLOAD : CRC_LO;
      }
      break;
    case PAYLOAD:
      if (payloadPos < RX_CAP) rx[payloadPos] = b;  // bytes beyond the buffer are only CRC'd
      payloadPos++;
      crcCalc = crcUpdate(crcCalc, b);
      if (payloadPos == frameLen) state = CRC_LO;
      break;
    case CRC_LO:
      crcRecv = b;
      state = CRC_HI;
      break;
    case CRC_HI:
      crcRecv |= (uint16_t)b << 8;
      state = WAIT_SOF;
      if (crcRecv != crcCalc) { sendError(header[1], ERR_BAD_CRC, header[0], "request CRC mismatch"); break; }
      if (tooLong) {
        uint8_t code = header[0] == CMD_RUN_BATCH ? ERR_BATCH_TOO_LARGE : ERR_BAD_LENGTH;
        sendError(header[1], code, header[0], "payload larger than this board's buffer");
        break;
      }
      dispatch(header[0], header[1], frameLen);
      break;
  }
}

void setup() {
  boardSetup();
  goSafe();  // power-up state: safe, and no RUN_BATCH until SET_LIMITS
  Serial.begin(BAUD);
}

void loop() {
  while (Serial.available() > 0) {
    lastByteMs = millis();
    onByte((uint8_t)Serial.read());
  }
  if (state != WAIT_SOF && millis() - lastByteMs > FRAME_TIMEOUT_MS) {
    state = WAIT_SOF;  // a cut or false frame: abandon it so the next request is heard
  }
}
