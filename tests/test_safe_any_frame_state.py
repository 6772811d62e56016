"""Issue 23, "SAFE in any frame state": a serial DAQ board without a frame timeout, and a Ctrl-C at any byte.

A board that never drops a half-received frame takes whatever arrives next -- SAFE included -- as the rest
of it. The host must end the cut frame first (with a wrong CRC, so nothing runs), then send SAFE, and call
the bench safe only when SAFE's reply arrived. These tests cut writes at every byte offset of a frame on
the pty fake firmware with ``frame_timeout=None``, for both ways a firmware may resume after a bad CRC.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from physnn.devices.errors import InstrumentTimeout
from physnn.devices.serial_daq import read_reply
from physnn.devices.serial_protocol import (
    CMD_RUN_BATCH,
    CMD_SAFE,
    OVERHEAD,
    RESUME_AFTER_BAD_CRC,
    CRCError,
    FrameReader,
    encode_codes,
    encode_frame,
    flush_after,
)
from physnn.devices.sim.fake_firmware import FakeFirmware, simulated_serial_daq
from physnn.devices.transport import SerialTransport
from physnn.simulators.identity import IdentitySystem


def _bench(n: int, mode: str = "rescan", **kw):
    """A bench on a fake board WITHOUT a frame timeout (a half frame waits for ever)."""
    opts = dict(backend="identity", n_inputs=n, frame_timeout=None, after_bad_crc=mode, timeout=0.5, backoff=0.0)
    return simulated_serial_daq(**{**opts, **kw})


def _volts(rows: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(rows, n, generator=torch.Generator().manual_seed(seed)) * 5.0


def _cut_writes(transport, *cuts: int) -> None:
    """The next ``len(cuts)`` writes stop after ``cuts[i]`` of their bytes reached the port, each with a Ctrl-C.

    The cut lands inside one of the transport's chunks, where a real Ctrl-C lands: the transport cannot know
    exactly how many bytes of that chunk left.
    """
    pending = list(cuts)
    write_raw, write_chunk = transport.write_raw, transport._write_bytes

    def cut_write(data):
        if not pending:
            return write_raw(data)
        left = [pending.pop(0)]

        def chunk(c):
            if left[0] >= len(c):
                left[0] -= len(c)
                return write_chunk(c)
            if left[0]:
                write_chunk(c[: left[0]])
            raise KeyboardInterrupt

        transport._write_bytes = chunk
        try:
            return write_raw(data)
        finally:
            del transport._write_bytes

    transport.write_raw = cut_write


def _assert_safe_and_nothing_ran(bench, rows_before: int, safes_before: int, what) -> None:
    fw = bench.firmware
    assert bench.safe_confirmed is True, what
    assert fw.safe_count > safes_before and fw.log[-1][0] == "SAFE", (what, fw.log[-4:])
    assert (fw.dac_codes == fw.safe_code).all(), what
    assert fw.rows_run == rows_before, what  # the cut frame never ran: it was ended with a wrong CRC
    assert fw.error is None


def test_a_board_without_frame_timeout_swallows_a_request_sent_after_half_a_frame():
    """What the host is up against (the fake models it): SAFE after half a RUN_BATCH frame gets no reply."""
    frame = encode_frame(CMD_RUN_BATCH, 1, encode_codes(np.zeros((4, 4), dtype=np.uint16)))
    for frame_timeout, answered in ((None, False), (0.05, True)):
        with (
            FakeFirmware(IdentitySystem(4), frame_timeout=frame_timeout) as fw,
            SerialTransport(fw.port, timeout=0.3) as t,
        ):
            t.write_raw(frame[: len(frame) // 2])
            time.sleep(0.15)  # longer than a frame timeout, when the board has one
            t.write_raw(encode_frame(CMD_SAFE, 2))
            if answered:
                assert read_reply(t, CMD_SAFE, 2, 0.5).seq == 2 and fw.safe_count == 1
            else:
                with pytest.raises(InstrumentTimeout):
                    read_reply(t, CMD_SAFE, 2, 0.3)
                assert fw.safe_count == 0


@pytest.mark.fault("unsafe")
@pytest.mark.parametrize("chunk", [1, 256], ids=["exact", "chunk256"])
@pytest.mark.parametrize("mode", RESUME_AFTER_BAD_CRC)
def test_ctrl_c_at_every_byte_of_a_run_batch_frame_still_reaches_acknowledged_safe(mode, chunk):
    bench = _bench(4, mode)
    bench.transport.write_chunk = chunk  # 1: the host knows the exact cut; 256: only the chunk it fell in
    x = _volts(4, 4)
    frame_len = OVERHEAD + 2 + 2 * 4 * 4
    try:
        y = bench(x)
        for k in range(frame_len):  # k bytes of the RUN_BATCH frame reached the board, then Ctrl-C
            fw = bench.firmware
            rows, safes = fw.rows_run, fw.safe_count
            _cut_writes(bench.transport, k)
            with pytest.raises(KeyboardInterrupt):
                bench(x)
            _assert_safe_and_nothing_ran(bench, rows, safes, f"cut after {k} of {frame_len} bytes")
        assert torch.equal(bench(x), y)  # and the bench still measures exactly
    finally:
        bench.close()


@pytest.mark.fault("unsafe")
def test_ctrl_c_in_a_2569_byte_frame_between_and_inside_chunks():
    """The campaign's case: a 2,569-byte RUN_BATCH (80 rows x 16 DACs), cut between its chunks and inside them."""
    bench = _bench(16, max_batch=80)
    x = _volts(80, 16, seed=1)
    frame_len = OVERHEAD + 2 + 2 * 80 * 16
    assert frame_len == 2569
    size = bench.transport.write_chunk
    offsets = sorted(
        {*range(0, 8), *range(7, frame_len, 97), frame_len - 1, frame_len - 2}
        | {b + d for b in range(size, frame_len, size) for d in (-1, 0, 1)}
    )
    try:
        for k in offsets:
            fw = bench.firmware
            rows, safes = fw.rows_run, fw.safe_count
            _cut_writes(bench.transport, k)
            with pytest.raises(KeyboardInterrupt):
                bench(x)
            _assert_safe_and_nothing_ran(bench, rows, safes, f"cut after {k} of {frame_len} bytes")
    finally:
        bench.close()


@pytest.mark.fault("unsafe")
@pytest.mark.parametrize("mode", RESUME_AFTER_BAD_CRC)
def test_a_second_ctrl_c_during_the_safe_exchange_is_survived(mode):
    """Two Ctrl-Cs: one cuts the frame, the next cuts what ends it (or SAFE itself); the next safe state works."""
    bench = _bench(4, mode)
    bench.transport.write_chunk = 1
    x = _volts(4, 4, seed=2)
    try:
        bench(x)
        for k, j in ((5, 3), (20, 1), (30, 10), (40, 0)):
            fw = bench.firmware
            rows, safes = fw.rows_run, fw.safe_count
            _cut_writes(bench.transport, k, j)  # j: bytes of the flush (or of SAFE) before the second Ctrl-C
            with pytest.raises(KeyboardInterrupt):
                bench(x)
            assert bench.safe_confirmed is False  # not acknowledged: never called safe
            bench.safe_state()  # what close() does next
            _assert_safe_and_nothing_ran(bench, rows, safes, (k, j))
        for j in range(1, 7):  # Ctrl-C inside the 7-byte SAFE frame itself
            _cut_writes(bench.transport, j)
            with pytest.raises(KeyboardInterrupt):
                bench.safe_state()
            assert bench.safe_confirmed is False
            bench.safe_state()
            assert bench.safe_confirmed is True and bench.firmware.log[-1][0] == "SAFE"
    finally:
        bench.close()


@pytest.mark.fault("unsafe")
def test_a_board_left_mid_frame_by_someone_else_is_flushed_after_one_timeout():
    """The host did not send the half frame (another process, killed mid-write): SAFE goes unanswered once,
    then one longest frame of zero bytes ends whatever the board holds, and the retried SAFE is acknowledged."""
    bench = _bench(4, retries=2, timeout=0.3)
    events = []
    bench.event_hook = lambda kind, fields: events.append(kind)
    frame = encode_frame(CMD_RUN_BATCH, 99, encode_codes(np.full((4, 4), 30000, dtype=np.uint16)))
    try:
        bench.transport.write_raw(frame[:23])  # complete as far as this host knows
        rows, safes = bench.firmware.rows_run, bench.firmware.safe_count
        bench.safe_state()
        _assert_safe_and_nothing_ran(bench, rows, safes, "foreign half frame")
        assert events.count("timeout") == 1 and "frame_flushed" in events
    finally:
        bench.close()


@pytest.mark.fault("unsafe")
def test_the_console_and_the_close_error_say_when_safe_was_not_acknowledged():
    """A bench whose SAFE is never answered: close() raises saying the outputs may be driven (the run file's
    close_failed records that text), and safe_confirmed stays False for a script to tell its user."""
    bench = _bench(4, retries=1, timeout=0.2)
    bench(_volts(2, 4))
    bench.firmware.inject("drop", command="SAFE", count=10)
    with pytest.raises(InstrumentTimeout, match="safe state NOT acknowledged, the outputs may still be driven"):
        bench.close()
    assert bench.safe_confirmed is False and bench.closed


# ------------------------------------------------------------ the flush itself
@pytest.mark.fault("unsafe")
@pytest.mark.parametrize("mode", RESUME_AFTER_BAD_CRC)
def test_flush_after_ends_every_cut_frame_with_no_frame_accepted(mode):
    """For every cut of a RUN_BATCH frame (random codes, so SOF bytes inside the payload), a receiver fed the
    cut frame and the flush accepts no frame and ends up hunting with nothing buffered."""
    codes = np.random.default_rng(0).integers(0, 65536, size=(20, 8)).astype(np.uint16)
    frame = encode_frame(CMD_RUN_BATCH, 7, encode_codes(codes))
    assert frame.count(0xA5) > 1
    for k in range(1, len(frame)):
        reader = FrameReader(mode)
        reader.feed(frame[:k] + flush_after(frame, k, k))
        while True:
            try:
                assert reader.next_frame() is None, k
                break
            except CRCError:
                continue
        reader.needed()  # drops what cannot start a frame
        assert reader.buffered == 0, (k, mode)
    assert flush_after(frame, 0, 0) == b"" and flush_after(frame, len(frame), len(frame)) == b""
    wide = flush_after(frame, 3, 100)  # one flush for every cut in 3..100
    assert len(wide) >= len(frame) - 5 and 0xA5 not in wide  # from a cut after 5 bytes on, LEN is the frame's


# ------------------------------------------------------------ the SCPI bench
def _awg_bench(device_clear: bool):
    from physnn.devices.sim.scpi_bench import simulated_awg_scope

    return simulated_awg_scope(
        n_inputs=4, n_outputs=4, noise=False, noise_volts=0.0, timeout=0.1, backoff=0.0, device_clear=device_clear
    )


def _cut_upload(transport, k: int) -> None:
    """The next waveform upload (``SOUR1:DATA:ARB:DAC name,#<block>``) stops after ``k`` bytes, with a Ctrl-C."""
    write_chunk = transport._write_bytes

    def chunk(data):
        if not bytes(data).startswith(b"SOUR1:DATA:ARB:DAC"):
            return write_chunk(data)
        del transport._write_bytes
        if k:
            write_chunk(data[:k])
        raise KeyboardInterrupt

    transport._write_bytes = chunk


@pytest.mark.fault("unsafe")
@pytest.mark.parametrize("device_clear", [True, False], ids=["instr", "socket"])
def test_ctrl_c_inside_a_waveform_block_still_turns_the_awg_output_off_confirmed(device_clear):
    """The SCPI form of the same class: cut in the middle of the IEEE block of a waveform upload, the AWG would
    take OUTP1 OFF as block data. It is ended first (device clear, or filler that ends it in an error), and the
    output is read back off; the cut waveform never becomes a waveform, and the bench measures exactly after."""
    sys = _awg_bench(device_clear)
    x = torch.randint(0, 256, (3, 4), generator=torch.Generator().manual_seed(0)).float() / 255  # the optics' levels
    awg = sys.bench.awg
    try:
        y = sys(x)
        data = 2 * sys.framing.length(3)  # int16 codes of the one waveform for 3 samples
        size = len(b"SOUR1:DATA:ARB:DAC physnn,#") + 1 + len(str(data)) + data + 1  # header, block, newline
        offsets = sorted({*range(0, 40), *range(40, size, 37), size - 2, size - 1, size})
        for k in offsets:
            _cut_upload(sys.awg.transport, k)
            with pytest.raises(KeyboardInterrupt):
                sys(x)
            assert sys.safe_confirmed is True, k
            assert awg.output is False and not sys.awg.transport.input, k  # off, and its parser idle again
            assert awg.errors == [], (k, awg.errors)
            assert ("physnn" in awg.arbs) == (k == size), k  # only a whole upload is a waveform
        assert torch.equal(sys(x), y)
    finally:
        sys.close()
