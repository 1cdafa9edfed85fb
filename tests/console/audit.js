// The checks every console page passes in the browser tests: labels, the skip link first,
// text contrast (WCAG AA 4.5:1) and no sideways scrolling at phone width.
() => {
  const problems = [];
  const first = document.querySelector('a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]');
  if (!first || !first.classList.contains('skip')) problems.push('the skip link is not the first stop');
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    if (!el.labels || el.labels.length === 0) {
      if (!el.getAttribute('aria-label')) problems.push('unlabelled ' + el.outerHTML.slice(0, 80));
    }
  }
  for (const b of document.querySelectorAll('button')) {
    if (!b.textContent.trim() && !b.getAttribute('aria-label')) problems.push('nameless button');
  }
  const rgb = (s) => (s.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const texts = document.querySelectorAll('main a, main p, main td, main th, main button, main label, main summary, main dd, main dt, main .status, nav a, nav button');
  for (const el of texts) {
    if (!el.offsetParent || !el.textContent.trim()) continue;
    const fg = lum(rgb(getComputedStyle(el).color).slice(0, 3));
    const bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    if (ratio < 4.5) problems.push('contrast ' + ratio.toFixed(2) + ' ' + el.outerHTML.slice(0, 80));
  }
  if (document.documentElement.scrollWidth > window.innerWidth + 1) {
    problems.push('page wider than the screen: ' + document.documentElement.scrollWidth);
  }
  return problems;
}
