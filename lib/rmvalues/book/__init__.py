"""Book layer: the run configuration (:mod:`.config`), the stage runner (:mod:`.runner`), the table of
contents (:mod:`.toc`), the built book's checks (:mod:`.check`) and the command line (:mod:`.cli`). The top
layer: it imports stage packages only by the names the configuration gives."""
