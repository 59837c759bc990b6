/*
 * Typeset every formula on the page with the KaTeX copy the site serves itself
 * (javascripts/vendor/katex, refreshed by scripts/vendor_katex.sh): no CDN, no web fonts.
 *
 * Two sources of math:
 *   - Markdown pages: pymdownx.arithmatex (generic mode) wraps each formula in
 *     <span class="arithmatex">\( ... \)</span> or <div class="arithmatex">\[ ... \]</div>
 *     (or a bare \begin{env} ... \end{env}); we render those elements directly.
 *   - Notebook pages (mkdocs-jupyter): markdown cells keep their $...$ / $$...$$ delimiters;
 *     KaTeX's auto-render finds them inside the rendered markdown cells only, so a dollar
 *     sign in code or in output cells is never touched.
 *
 *   - Navigation text: a heading with math reaches the table of contents, the header and the
 *     footer's previous/next links as plain text with its \( ... \) delimiters; it is typeset
 *     there as well.
 *
 * Material's document$ observable fires on the first load and after every instant navigation.
 * When all formulas are done, <body data-math-rendered="N"> records how many were rendered;
 * the browser tests wait for it.
 */
(function () {
  "use strict";

  var OPTIONS = { throwOnError: false, strict: "ignore", output: "htmlAndMathml" };

  var NOTEBOOK_DELIMITERS = [
    { left: "$$", right: "$$", display: true },
    { left: "\\[", right: "\\]", display: true },
    { left: "\\begin{equation}", right: "\\end{equation}", display: true },
    { left: "\\begin{equation*}", right: "\\end{equation*}", display: true },
    { left: "\\begin{align}", right: "\\end{align}", display: true },
    { left: "\\begin{align*}", right: "\\end{align*}", display: true },
    { left: "\\begin{gather}", right: "\\end{gather}", display: true },
    { left: "$", right: "$", display: false },
    { left: "\\(", right: "\\)", display: false },
  ];

  var NAVIGATION_DELIMITERS = [
    { left: "\\(", right: "\\)", display: false },
    { left: "$", right: "$", display: false },
  ];

  function strip(tex, left, right) {
    return tex.slice(left.length, tex.length - right.length);
  }

  function renderArithmatex(root) {
    root.querySelectorAll(".arithmatex").forEach(function (el) {
      if (el.querySelector(".katex")) return; // already rendered
      var tex = el.textContent.trim();
      var display = el.tagName === "DIV";
      if (tex.startsWith("\\(") && tex.endsWith("\\)")) {
        tex = strip(tex, "\\(", "\\)");
        display = false;
      } else if (tex.startsWith("\\[") && tex.endsWith("\\]")) {
        tex = strip(tex, "\\[", "\\]");
        display = true;
      }
      katex.render(tex, el, Object.assign({ displayMode: display }, OPTIONS));
    });
  }

  function renderNotebookMarkdown(root) {
    root.querySelectorAll(".jupyter-wrapper .jp-RenderedMarkdown").forEach(function (el) {
      renderMathInElement(el, Object.assign({ delimiters: NOTEBOOK_DELIMITERS }, OPTIONS));
    });
  }

  var NAVIGATION = ".md-sidebar, .md-header__topic, .md-footer__title";

  function renderNavigation(root) {
    root.querySelectorAll(NAVIGATION).forEach(function (el) {
      renderMathInElement(el, Object.assign({ delimiters: NAVIGATION_DELIMITERS }, OPTIONS));
    });
  }

  function typeset(root) {
    renderArithmatex(root);
    renderNotebookMarkdown(root);
    renderNavigation(root);
    document.body.dataset.mathRendered = String(root.querySelectorAll(".katex").length);
  }

  if (window.document$ && typeof window.document$.subscribe === "function") {
    window.document$.subscribe(function (doc) {
      typeset(doc.body || document.body);
    });
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () {
      typeset(document.body);
    });
  } else {
    typeset(document.body);
  }
})();
