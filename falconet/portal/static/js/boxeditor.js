// A box editor over an image: draw, move, resize and delete boxes with a pointer or the keyboard.
// Boxes are kept in normalized coordinates (0..1 of the image), as the Training API stores them.
import { el } from "./ui.js";

const MIN = 0.01;
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

export class BoxEditor {
  constructor(stage, { boxes = [], tagName = () => "", defaultTag = () => "", onChange = () => {}, onSelect = () => {} } = {}) {
    this.stage = stage;
    this.boxes = boxes.map((b) => ({ ...b }));
    this.proposals = [];
    this.tagName = tagName;
    this.defaultTag = defaultTag;
    this.onChange = onChange;
    this.onSelect = onSelect;
    this.selected = -1;
    this.drag = null;
    stage.tabIndex = 0;
    stage.setAttribute("role", "application");
    stage.setAttribute("aria-label", "Image with boxes. Drag on the image to draw a box; drag a box to move it, its corner to resize it. "
      + "Plus adds a box in the middle, Delete removes the selected box, arrow keys move it and Alt + arrow keys resize it "
      + "(Shift: faster), [ and ] select the previous or next box.");
    stage.addEventListener("pointerdown", (e) => this.down(e));
    window.addEventListener("pointermove", this.move = this.move.bind(this));
    window.addEventListener("pointerup", this.up = this.up.bind(this));
    stage.addEventListener("keydown", (e) => this.key(e));
    this.render();
  }

  destroy() {
    window.removeEventListener("pointermove", this.move);
    window.removeEventListener("pointerup", this.up);
  }

  point(e) {
    const rect = this.stage.getBoundingClientRect();
    return { x: clamp((e.clientX - rect.left) / rect.width, 0, 1), y: clamp((e.clientY - rect.top) / rect.height, 0, 1) };
  }

  down(e) {
    if (e.button !== 0) return;
    e.preventDefault();
    this.stage.focus();
    const p = this.point(e);
    const target = e.target.closest("[data-index]");
    const proposal = e.target.closest("[data-proposal]");
    if (proposal) { this.acceptProposal(Number(proposal.dataset.proposal)); return; }
    if (target) {
      const index = Number(target.dataset.index);
      this.select(index);
      const b = this.boxes[index];
      const handle = e.target.dataset.handle;
      this.drag = { mode: handle ? `resize-${handle}` : "move", start: p, orig: { ...b } };
    } else {
      this.boxes.push({ tagId: this.defaultTag(), left: p.x, top: p.y, width: 0, height: 0, fresh: true });
      this.select(this.boxes.length - 1);
      this.drag = { mode: "draw", start: p, orig: null };
    }
    this.render();
  }

  move(e) {
    if (!this.drag) return;
    const p = this.point(e);
    const b = this.boxes[this.selected];
    const { mode, start, orig } = this.drag;
    if (mode === "draw") {
      b.left = Math.min(start.x, p.x); b.top = Math.min(start.y, p.y);
      b.width = Math.abs(p.x - start.x); b.height = Math.abs(p.y - start.y);
    } else if (mode === "move") {
      b.left = clamp(orig.left + p.x - start.x, 0, 1 - orig.width);
      b.top = clamp(orig.top + p.y - start.y, 0, 1 - orig.height);
    } else if (mode === "resize-se") {
      b.width = Math.max(MIN, p.x - orig.left); b.height = Math.max(MIN, p.y - orig.top);
    } else if (mode === "resize-nw") {
      const right = orig.left + orig.width, bottom = orig.top + orig.height;
      b.left = Math.min(p.x, right - MIN); b.top = Math.min(p.y, bottom - MIN);
      b.width = right - b.left; b.height = bottom - b.top;
    }
    b.dirty = true;
    this.render();
  }

  up() {
    if (!this.drag) return;
    const b = this.boxes[this.selected];
    if (this.drag.mode === "draw" && (b.width < MIN || b.height < MIN)) {
      this.boxes.splice(this.selected, 1);
      this.select(-1);
    }
    this.drag = null;
    this.render();
    this.onChange(this.boxes);
  }

  key(e) {
    if (e.key === "Delete" || e.key === "Backspace") {
      if (this.selected >= 0) { e.preventDefault(); this.remove(this.selected); }
      return;
    }
    if (e.key === "]" || e.key === "[") {
      if (!this.boxes.length) return;
      const n = this.boxes.length;
      this.select(((this.selected < 0 ? (e.key === "]" ? -1 : 0) : this.selected) + (e.key === "]" ? 1 : -1) + n) % n);
      this.render();
      return;
    }
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (e.key === "+" || e.key === "Insert") { e.preventDefault(); this.addBox(); return; }
    if (arrows[e.key] && this.selected >= 0) {
      e.preventDefault();
      e.stopPropagation();
      const step = e.shiftKey ? 0.05 : 0.005;
      const b = this.boxes[this.selected];
      if (e.altKey) {  // Alt + arrows: resize from the bottom-right corner
        b.width = clamp(b.width + arrows[e.key][0] * step, MIN, 1 - b.left);
        b.height = clamp(b.height + arrows[e.key][1] * step, MIN, 1 - b.top);
      } else {
        b.left = clamp(b.left + arrows[e.key][0] * step, 0, 1 - b.width);
        b.top = clamp(b.top + arrows[e.key][1] * step, 0, 1 - b.height);
      }
      b.dirty = true;
      this.render();
      this.onChange(this.boxes);
    }
  }

  // A box in the middle of the photo, for keyboard users (then arrows move it, Alt + arrows resize it).
  addBox() {
    this.boxes.push({ tagId: this.defaultTag(), left: 0.35, top: 0.35, width: 0.3, height: 0.3, fresh: true });
    this.select(this.boxes.length - 1);
    this.render();
    this.onChange(this.boxes);
  }

  select(index) {
    this.selected = index;
    this.onSelect(index);
  }

  remove(index) {
    this.boxes.splice(index, 1);
    this.select(Math.min(index, this.boxes.length - 1));
    this.render();
    this.onChange(this.boxes);
  }

  setTag(index, tagId) {
    this.boxes[index].tagId = tagId;
    this.boxes[index].dirty = true;
    this.render();
    this.onChange(this.boxes);
  }

  setProposals(list) { this.proposals = list; this.render(); }

  acceptProposal(index) {
    const p = this.proposals.splice(index, 1)[0];
    if (!p) return;
    this.boxes.push({ tagId: this.defaultTag(), ...p.boundingBox, fresh: true });
    this.select(this.boxes.length - 1);
    this.render();
    this.onChange(this.boxes);
  }

  render() {
    this.stage.querySelectorAll(".box").forEach((n) => n.remove());
    const pos = (b) => `left:${b.left * 100}%;top:${b.top * 100}%;width:${b.width * 100}%;height:${b.height * 100}%`;
    this.proposals.forEach((p, i) => this.stage.append(el("div", { class: "box proposal", "data-proposal": i, style: pos(p.boundingBox),
      title: `Proposal (${Math.round(p.confidence * 100)}%): click to accept` })));
    this.boxes.forEach((b, i) => this.stage.append(el("div", { class: "box" + (i === this.selected ? " selected" : ""), "data-index": i, style: pos(b) },
      el("span", { class: "label" }, this.tagName(b.tagId) || "no tag"),
      el("span", { class: "handle nw", "data-handle": "nw" }), el("span", { class: "handle", "data-handle": "se" }))));
  }
}
