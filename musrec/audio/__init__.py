"""Audio in: decoding any file ffmpeg reads (``decode``), the one WAV format musrec reads and writes itself
(``wav``), and resampling to VGGish's 16 kHz (``resample``). Imports nothing of musrec above ``errors``."""
