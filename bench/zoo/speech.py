"""Speech-like input for Resemblyzer's speaker encoder (Resemblyzer 0.1.4).

Audio: voiced syllables (harmonics of a gliding f0, shaped by three formant resonances that move between
vowels), fricative onsets (high-passed noise bursts), short pauses between words, a faint noise floor;
each "speaker" has its own pitch range and vocal-tract length (formant scale).

Features, as ``resemblyzer/audio.py`` does them: ``normalize_volume(wav, -30 dBFS, increase_only=True)``, then
``wav_to_mel_spectrogram``: ``librosa.feature.melspectrogram(sr=16000, n_fft=400 (25 ms), hop_length=160 (10 ms),
n_mels=40)`` transposed to (frames, 40) -- a *power* mel spectrogram, not log-mel (hparams.py) -- and the encoder
takes partial utterances of 160 frames (``partials_n_frames``). librosa is not a dependency here: the STFT and the
mel filterbank below re-implement librosa 0.10's defaults in numpy (periodic Hann window, centred frames with zero
padding, |X|^2, Slaney mel scale with Slaney area normalization). Resemblyzer's ``trim_long_silences`` (webrtcvad)
is not applied: the synthetic pauses are kept short (<= 250 ms), below what it would trim.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
N_FFT = SAMPLE_RATE * 25 // 1000  # 400
HOP = SAMPLE_RATE * 10 // 1000  # 160
N_MELS = 40
PARTIAL_FRAMES = 160
TARGET_DBFS = -30.0
INT16_MAX = 2**15 - 1

# (F1, F2, F3) in Hz for an adult male vocal tract; scaled per speaker
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410],
                   [660, 1720, 2410], [440, 1020, 2240]], np.float64)
BANDWIDTHS = np.array([80.0, 100.0, 140.0])


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa htk=False): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with its defaults: fmin 0, fmax sr/2, Slaney scale and norm."""
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


def power_mel(wav: np.ndarray) -> np.ndarray:
    """librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=40).T as float32."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # scipy get_window("hann", fftbins=True)
    padded = np.pad(wav.astype(np.float64), N_FFT // 2, mode="constant")
    frames = 1 + (len(padded) - N_FFT) // HOP
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(frames)[:, None]
    spectrum = np.abs(np.fft.rfft(padded[index] * window, n=N_FFT, axis=1)) ** 2
    return (spectrum @ mel_filterbank().T.astype(np.float64)).astype(np.float32)


def normalize_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """resemblyzer.audio.normalize_volume(wav, -30, increase_only=True)."""
    rms = np.sqrt(np.mean((wav * INT16_MAX) ** 2))
    change = target_dbfs - 20 * np.log10(rms / INT16_MAX)
    return wav if change < 0 else wav * (10 ** (change / 20))


def _resonance(freq: np.ndarray, centre: np.ndarray, bandwidth: float) -> np.ndarray:
    """Magnitude of a second-order resonator (unity at DC), one formant."""
    ratio = freq / centre
    return 1.0 / np.sqrt((1 - ratio**2) ** 2 + (freq * bandwidth / centre**2) ** 2)


def _envelope(n: int, attack: int) -> np.ndarray:
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, max(2, min(attack, n // 2))))
    env = np.ones(n)
    env[: len(ramp)] = ramp
    env[n - len(ramp) :] = ramp[::-1]
    return env


def _syllable(rng: np.random.Generator, f0: float, scale: float, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    glide = f0 * (1 + rng.uniform(-0.12, 0.12) * t / max(seconds, 1e-3) + 0.015 * np.sin(2 * np.pi * rng.uniform(4, 6) * t))
    glide *= 1 + 0.004 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1))  # jitter
    phase = 2 * np.pi * np.cumsum(glide) / SAMPLE_RATE
    start, end = VOWELS[rng.integers(len(VOWELS))] * scale, VOWELS[rng.integers(len(VOWELS))] * scale
    mix = np.linspace(0, 1, n)[None, :]
    formants = start[:, None] * (1 - mix) + end[:, None] * mix  # (3, n)
    harmonics = np.arange(1, int(7000 / f0) + 1)[:, None]  # (K, 1)
    freq = harmonics * glide[None, :]
    gain = np.ones_like(freq)
    for k in range(3):
        gain *= _resonance(freq, formants[k][None, :], BANDWIDTHS[k])
    gain *= (freq < SAMPLE_RATE / 2 - 500) / harmonics  # ~ -6 dB/octave source + radiation
    voiced = (gain * np.sin(harmonics * phase[None, :])).sum(axis=0)
    voiced /= np.abs(voiced).max() + 1e-9
    return voiced * _envelope(n, int(0.03 * SAMPLE_RATE))


def _fricative(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum *= 1 / (1 + np.exp(-(freqs - rng.uniform(2500, 4500)) / 300))  # high-pass: s, sh, f
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.abs(noise).max() + 1e-9) * rng.uniform(0.1, 0.3) * _envelope(n, int(0.01 * SAMPLE_RATE))


def utterance(rng: np.random.Generator, f0: float, scale: float, seconds: float = 2.4) -> np.ndarray:
    """Words of 1-3 syllables separated by short pauses, until ``seconds`` are filled."""
    parts, total = [], 0
    while total < seconds * SAMPLE_RATE:
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 0.4:
                parts.append(_fricative(rng, rng.uniform(0.04, 0.1)))
            parts.append(_syllable(rng, f0 * rng.uniform(0.9, 1.15), scale, rng.uniform(0.1, 0.28)) * rng.uniform(0.5, 1.0))
        parts.append(np.zeros(int(rng.uniform(0.05, 0.25) * SAMPLE_RATE)))
        total = sum(len(p) for p in parts)
        f0 *= rng.uniform(0.97, 1.0)  # declination
    wav = np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]
    wav = wav * 0.3 + rng.standard_normal(len(wav)) * 10 ** (-60 / 20)  # faint noise floor
    return normalize_volume(wav)


def mel_samples(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 160, 40) partial-utterance mel frames from ``count`` utterances of varied speakers."""
    out = []
    for _ in range(count):
        f0 = rng.uniform(85, 250)
        scale = rng.uniform(0.85, 1.25) if f0 < 160 else rng.uniform(1.05, 1.3)
        mel = power_mel(utterance(rng, f0, scale))
        start = int(rng.integers(0, mel.shape[0] - PARTIAL_FRAMES + 1))
        out.append(mel[start : start + PARTIAL_FRAMES])
    return np.stack(out)
