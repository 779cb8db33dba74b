// Renders the pages' mathematics (\( ... \) inline, \[ ... \] displayed: pymdownx.arithmatex's
// generic output) with the KaTeX bundled beside this file: no network, as the site works offline.
function renderMath() {
  document.querySelectorAll(".arithmatex").forEach(function (element) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  });
}
if (typeof document$ !== "undefined") {
  document$.subscribe(renderMath); // Material's instant navigation
} else {
  document.addEventListener("DOMContentLoaded", renderMath);
}
