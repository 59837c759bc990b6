/*
 * Generated figures open at full size: each image of a figure block becomes a link to the
 * figure's SVG file, so wide figures such as captured graphs can be read at any zoom. The link
 * always opens the light variant: a browser shows a lone SVG on white, where the dark variant's
 * light text would vanish. Nothing is fetched until the reader clicks.
 */
(function () {
  "use strict";

  function linkFigures(root) {
    root.querySelectorAll("figure.b4-figure img").forEach(function (img) {
      if (img.closest("a")) return;
      var figure = img.closest("figure");
      var light = figure.querySelector('img[src$="#only-light"]') || img;
      var link = document.createElement("a");
      link.href = light.getAttribute("src").split("#")[0];
      link.className = "b4-figure__zoom";
      link.title = "Open the figure at full size";
      link.target = "_blank";
      link.rel = "noopener";
      img.parentNode.insertBefore(link, img);
      link.appendChild(img);
    });
  }

  if (window.document$ && typeof window.document$.subscribe === "function") {
    window.document$.subscribe(function (doc) {
      linkFigures(doc.body || document.body);
    });
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () {
      linkFigures(document.body);
    });
  } else {
    linkFigures(document.body);
  }
})();
