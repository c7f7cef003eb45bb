/* Copy buttons for command blocks (progressive enhancement: without this file the buttons stay
 * hidden and the commands are plain, selectable text). A button's data-copy names the <pre>. */
(function () {
  "use strict";
  if (!navigator.clipboard || !window.isSecureContext) {
    // The clipboard API needs https or localhost; elsewhere, selecting the text on click helps.
    document.querySelectorAll("pre.cli-code").forEach(function (pre) {
      pre.addEventListener("click", function () {
        var range = document.createRange();
        range.selectNodeContents(pre);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
      });
    });
    return;
  }
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var target = document.getElementById(button.dataset.copy);
    if (!target) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(target.textContent).then(
        function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 1500);
        },
        function () {
          button.textContent = "Copy failed";
        }
      );
    });
  });
})();
