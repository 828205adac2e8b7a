// Video takes: which output is the MP4, its poster frame, and its facts (take.json `media`).

/** `{name, out, poster, facts}` of a take's first video output, or null (an image take). */
export function videoOf(take) {
  const outputs = take?.outputs ?? {};
  const entry = Object.entries(outputs).find(([, o]) => String(o?.content_type).startsWith('video/'));
  if (!entry) return null;
  const [name, out] = entry;
  const poster = outputs[`${name}_poster`] ?? Object.values(outputs).find((o) => String(o?.content_type).startsWith('image/')) ?? null;
  return { name, out, poster, facts: take.metadata?.media?.[name] ?? null };
}

/** "24 fps · 2.00 s · 48 frames · 512×320" from take.json media facts (what is known of it). */
export function factsText(facts) {
  if (!facts) return '';
  const bits = [];
  if (facts.fps != null) bits.push(`${+Number(facts.fps).toFixed(3)} fps`);
  if (facts.duration != null) bits.push(`${Number(facts.duration).toFixed(2)} s`);
  if (facts.frame_count != null) bits.push(`${facts.frame_count} frames`);
  if (facts.width && facts.height) bits.push(`${facts.width}×${facts.height}`);
  return bits.join(' · ');
}

/** m:ss.s of a time in seconds. */
export function clock(s) {
  const t = Math.max(0, Number(s) || 0);
  return `${Math.floor(t / 60)}:${(t % 60).toFixed(1).padStart(4, '0')}`;
}
