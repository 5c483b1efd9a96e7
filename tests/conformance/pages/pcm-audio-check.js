// Run in a page of the voicecall server (page.evaluate): checks pcm-audio.js's two AudioWorklets offline.
// 1. Playback: 0.5 s of a 440 Hz tone at 24 kHz, pushed in 25 chunks of odd sizes, rendered at 48 kHz: the output
//    must be the continuous tone (no gap or click at chunk joins), then silence; the player counts all of it played.
// 2. Capture: 1 s of a 440 Hz oscillator at 48 kHz becomes 40 ms chunks of PCM16 at 24 kHz with the same tone.
async () => {
  const { PcmAudio, PCM_RATE } = await import("/pcm-audio.js");
  const rate = 48000, amp = 16000, f = 440;
  const tick = () => new Promise((r) => setTimeout(r, 200));

  const play = new OfflineAudioContext(1, rate, rate);
  const player = await PcmAudio.create(play);
  const n = PCM_RATE / 2, tone = new Int16Array(n);
  for (let i = 0; i < n; i++) tone[i] = Math.round(amp * Math.sin(2 * Math.PI * f * i / PCM_RATE));
  let chunks = 0;
  for (let off = 0, k = 0; off < n; k++) {
    const len = Math.min(n - off, 97 + (k * 131) % 900);
    player.play("item_a", 0, tone.slice(off, off + len).buffer);
    off += len;
    chunks++;
  }
  await tick();
  const out = (await play.startRendering()).getChannelData(0);
  await tick();
  let playErr = 0, tail = 0;
  for (let i = 0; i < rate / 2 - 2; i++) {
    playErr = Math.max(playErr, Math.abs(out[i] - (amp / 32768) * Math.sin(2 * Math.PI * f * i / rate)));
  }
  for (let i = rate / 2 + 2; i < out.length; i++) tail = Math.max(tail, Math.abs(out[i]));

  const cap = new OfflineAudioContext(1, rate, rate);
  const capturer = await PcmAudio.create(cap);
  const osc = cap.createOscillator();
  osc.frequency.value = f;
  const gain = cap.createGain();
  gain.gain.value = 0.5;
  osc.connect(gain);
  const got = [];
  capturer.startCapture(gain, (buf) => got.push(new Int16Array(buf)));
  osc.start();
  await cap.startRendering();
  await tick();
  const pcm = new Int16Array(got.reduce((a, c) => a + c.length, 0));
  got.reduce((o, c) => { pcm.set(c, o); return o + c.length; }, 0);
  // Fit the tone's phase from the first samples, then compare sample by sample.
  let capErr = 0;
  const phase = Math.asin(Math.max(-1, Math.min(1, pcm[0] / 16384)));
  const sign = pcm[1] >= pcm[0] ? 1 : -1;
  for (let i = 0; i < pcm.length; i++) {
    const ideal = 16384 * Math.sin((sign > 0 ? phase : Math.PI - phase) + 2 * Math.PI * f * i / PCM_RATE);
    capErr = Math.max(capErr, Math.abs(pcm[i] - ideal) / 16384);
  }
  return { chunks, playErr, tail, position: player.position, captured: pcm.length, captureChunks: got.map((c) => c.length),
    capErr };
}
